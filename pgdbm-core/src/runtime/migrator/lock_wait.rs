//! Short lock waits, retried.
//!
//! Why: PostgreSQL queues lock requests. An `ALTER TABLE` that waits behind a long transaction
//! (even one that only read the table) holds its place in the queue with an `ACCESS EXCLUSIVE`
//! request, and every later query on that table queues behind it: the service stalls for as
//! long as the longest transaction runs. So the run's session has `lock_timeout` set
//! ([`Migrator::ddl_lock_timeout`], 2 s by default): a statement that cannot get its lock gives
//! up in time, the file's transaction rolls back, the queries queued behind it go on, and after
//! a jittered, growing pause the file is tried again, up to
//! [`Migrator::ddl_lock_attempts`] times. The service's queries then wait at most the timeout,
//! once per attempt, never for the blocker's whole transaction.
//!
//! While a statement waits, the sessions blocking it are read from `pg_blocking_pids` on a
//! second connection, so when the last attempt fails the error names them (pid, user,
//! application, state, transaction age, query): the operator knows whom to end.
//!
//! `-- pgdbm:no-transaction` files retry statement by statement: a single statement outside a
//! transaction has no effect when it fails, except the concurrent forms that work across
//! several transactions. `CREATE INDEX CONCURRENTLY` leaves an INVALID index behind, which is
//! dropped before the retry; `REINDEX … CONCURRENTLY` and `DETACH PARTITION … CONCURRENTLY`
//! leave states a blind retry would make worse, so they are not retried.

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::migrations::Migration;
use crate::runtime::error::{Aftermath, BlockingSession, Error, LockWaitError, Result};
use crate::runtime::outage::jittered;
use crate::sql_lex::{TokenKind, tokens};
use crate::template;

use super::Migrator;

/// SQLSTATE `lock_not_available`: what `lock_timeout` raises.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The first pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// The sessions blocking `$1`, oldest transaction first.
const BLOCKERS: &str = "SELECT a.pid, a.usename::text, a.application_name, a.state, \
     left(a.query, 500), EXTRACT(EPOCH FROM (now() - a.xact_start))::float8 \
     FROM pg_stat_activity a WHERE a.pid = ANY (pg_blocking_pids($1)) \
     ORDER BY a.xact_start NULLS LAST";

type BlockerRow = (
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<f64>,
);

/// Whether `e` is the server giving up on a lock (`lock_timeout`).
pub(super) fn is_lock_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some(LOCK_NOT_AVAILABLE))
}

impl Migrator {
    /// Sets the run's `lock_timeout` (for the session on a direct connection, which is closed
    /// at the end of the run; for the current transaction only (`local`) in pooler mode, where
    /// the server connection goes back to other clients) and returns the backend pid whose
    /// blockers [`execute_watched`](Self::execute_watched) names, in one round trip. 0 (and
    /// nothing sent) when lock waits are not limited.
    pub(super) async fn limit_lock_waits(
        &self,
        conn: &mut PgConnection,
        local: bool,
    ) -> Result<i32> {
        let Some(timeout) = self.ddl_lock_timeout else {
            return Ok(0);
        };
        let scope = if local { "SET LOCAL" } else { "SET" };
        let sql = format!(
            "{scope} lock_timeout = {}; SELECT pg_backend_pid()",
            timeout.as_millis().max(1)
        );
        let row = sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::query(sql.clone(), e))?;
        row.try_get(0).map_err(|e| Error::query(sql, e))
    }

    /// Runs `sql` on `conn`; if it is still running after three quarters of the lock timeout,
    /// reads who blocks it (on a connection of its own) while it goes on waiting.
    pub(super) async fn execute_watched(
        &self,
        conn: &mut PgConnection,
        pid: i32,
        sql: &str,
    ) -> (std::result::Result<(), sqlx::Error>, Vec<BlockingSession>) {
        let run = sqlx::raw_sql(AssertSqlSafe(sql.to_string())).execute(&mut *conn);
        let Some(timeout) = self.ddl_lock_timeout else {
            return (run.await.map(|_| ()), Vec::new());
        };
        let watch = async {
            tokio::time::sleep(timeout.mul_f64(0.75)).await;
            self.blockers_of(pid).await
        };
        tokio::pin!(run, watch);
        let mut blockers = Vec::new();
        let mut watching = true;
        loop {
            tokio::select! {
                r = &mut run => return (r.map(|_| ()), blockers),
                seen = &mut watch, if watching => {
                    blockers = seen;
                    watching = false;
                }
            }
        }
    }

    /// Who blocks backend `pid` now; empty if nobody does or they cannot be read (this only
    /// feeds an error message, so it never fails the run).
    async fn blockers_of(&self, pid: i32) -> Vec<BlockingSession> {
        let Ok(mut conn) = self.db.inner.pool.dedicated_connection().await else {
            return Vec::new();
        };
        let rows: Vec<BlockerRow> = sqlx::query_as(BLOCKERS)
            .bind(pid)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
        let _ = conn.close().await;
        rows.into_iter()
            .map(
                |(pid, user, application, state, query, age)| BlockingSession {
                    pid,
                    user,
                    application,
                    state,
                    query,
                    transaction_age: age
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(Duration::from_secs_f64),
                },
            )
            .collect()
    }

    /// Whether attempt `attempt` (from 1) may be followed by another.
    pub(super) fn may_retry(&self, attempt: u32) -> bool {
        self.ddl_lock_timeout.is_some() && attempt < self.ddl_lock_attempts
    }

    /// Logs the failed attempt and sleeps before the next one.
    pub(super) async fn pause_before_retry(
        &self,
        file: &str,
        attempt: u32,
        blockers: &[BlockingSession],
    ) {
        let pause = jittered(
            FIRST_PAUSE
                .saturating_mul(1 << (attempt - 1).min(6))
                .min(MAX_PAUSE),
        );
        let held_by = blockers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        tracing::warn!(
            file,
            module = %self.module,
            schema = self.db.schema().unwrap_or(""),
            attempt,
            attempts = self.ddl_lock_attempts,
            retry_in_ms = pause.as_millis() as u64,
            held_by = %held_by,
            "pgdbm: a migration statement gave up waiting for a lock (lock_timeout); rolled back, will retry"
        );
        tokio::time::sleep(pause).await;
    }

    /// After a file's attempt ran into the lock timeout and was rolled back: the error when it
    /// was the last attempt, else the pause before the next one.
    pub(super) async fn retry_or_give_up(
        &self,
        m: &Migration,
        map: &template::OffsetMap,
        gave_up: GaveUp,
    ) -> Result<()> {
        if !self.may_retry(gave_up.attempts) {
            let after = Aftermath::RolledBack;
            return Err(self.lock_wait_exhausted(m, map, None, gave_up, after));
        }
        self.pause_before_retry(&m.filename, gave_up.attempts, &gave_up.blockers)
            .await;
        Ok(())
    }

    /// The error after the last attempt: the file, the statement (`(offset, text)` in the
    /// rendered file, when one statement is known), and who held the lock.
    pub(super) fn lock_wait_exhausted(
        &self,
        m: &Migration,
        map: &template::OffsetMap,
        statement: Option<(usize, &str)>,
        gave_up: GaveUp,
        aftermath: Aftermath,
    ) -> Error {
        let GaveUp {
            error: e,
            attempts,
            blockers,
        } = gave_up;
        let hint = match blockers.first() {
            Some(b) => format!(
                "end that transaction (SELECT pg_terminate_backend({})) or wait for it, then run again; or raise ddl_lock_timeout / ddl_lock_attempts",
                b.pid
            ),
            None => "run again when the table is less busy, or raise ddl_lock_timeout / ddl_lock_attempts".into(),
        };
        let wait = LockWaitError {
            attempts,
            timeout: self.ddl_lock_timeout.unwrap_or_default(),
            blockers,
            source: e,
        };
        let message = format!("{wait}. Nothing of the waiting statement was applied; {hint}");
        let mut err = crate::runtime::error::MigrationError {
            file: Some(m.filename.clone()),
            position: None,
            statement: None,
            message,
            aftermath,
            source: Some(Box::new(wait)),
        };
        if let Some((offset, text)) = statement {
            let original = map.to_template(offset).min(m.content.len());
            err.position = Some(crate::migrations::line_col(&m.content, original));
            err.statement = Some(text.to_string());
        }
        Error::Migration(Box::new(err))
    }

    /// Drops the INVALID index named `name` that a timed-out `CREATE INDEX CONCURRENTLY` left,
    /// if there is one. Only an INVALID index is the failed attempt's: a valid one of that name
    /// was there before. The drop waits for the same locks, so it can time out too.
    async fn drop_invalid_index(
        &self,
        conn: &mut PgConnection,
        pid: i32,
        name: &str,
    ) -> (std::result::Result<(), sqlx::Error>, Vec<BlockingSession>) {
        const INVALID: &str = "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE NOT i.indisvalid AND c.relname = $1 AND n.nspname = $2";
        let schema = self.db.schema().unwrap_or("public");
        let found: Option<String> = match sqlx::query_scalar(INVALID)
            .bind(name)
            .bind(schema)
            .fetch_optional(&mut *conn)
            .await
        {
            Ok(found) => found,
            Err(e) => return (Err(e), Vec::new()),
        };
        match found {
            Some(index) => {
                let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {index}");
                self.execute_watched(conn, pid, &drop).await
            }
            None => (Ok(()), Vec::new()),
        }
    }

    /// Runs the statements of a no-transaction file, each retried on a lock timeout as far as
    /// that is safe (`pid`: the session's backend, from [`limit_lock_waits`](Self::limit_lock_waits)); stops at the first failure, which comes back with the statement's offset
    /// and text, the attempts made and the sessions seen blocking it.
    pub(super) async fn run_statements_retried<'s>(
        &self,
        conn: &mut PgConnection,
        pid: i32,
        file: &str,
        sql: &'s str,
    ) -> std::result::Result<(), StatementFailure<'s>> {
        for stmt in crate::migrations::split_statements(sql) {
            let leftover = leftover_of(stmt.text);
            let mut attempt = 1;
            // Whether a failed attempt may have left an INVALID index to drop first.
            let mut dirty = false;
            loop {
                let cleaned = match (&leftover, dirty) {
                    (Leftover::InvalidIndex(name), true) => {
                        self.drop_invalid_index(conn, pid, name).await
                    }
                    _ => (Ok(()), Vec::new()),
                };
                let (r, blockers) = match cleaned {
                    (Ok(()), _) => self.execute_watched(conn, pid, stmt.text).await,
                    failed => failed,
                };
                let Err(e) = r else { break };
                let fail = |e, blockers| StatementFailure {
                    offset: stmt.offset,
                    text: stmt.text,
                    error: e,
                    attempts: attempt,
                    blockers,
                };
                if !is_lock_timeout(&e) {
                    return Err(fail(e, Vec::new()));
                }
                if let Leftover::Refuse(why) = leftover {
                    tracing::warn!(file, why, "pgdbm: not retrying a no-transaction statement");
                    return Err(fail(e, blockers));
                }
                if !self.may_retry(attempt) {
                    return Err(fail(e, blockers));
                }
                dirty = true;
                self.pause_before_retry(file, attempt, &blockers).await;
                attempt += 1;
            }
        }
        Ok(())
    }
}

/// What a timed-out attempt of a no-transaction statement may leave behind.
enum Leftover {
    /// Nothing: one statement outside a transaction has no effect when it fails.
    Nothing,
    /// The INVALID index of a `CREATE INDEX CONCURRENTLY`, dropped before the retry.
    InvalidIndex(String),
    /// State a blind retry would make worse: not retried, for this reason.
    Refuse(&'static str),
}

fn leftover_of(statement: &str) -> Leftover {
    match concurrent_form(statement) {
        Concurrent::None | Concurrent::DropIndex => Leftover::Nothing,
        Concurrent::CreateIndex(Some(name)) => Leftover::InvalidIndex(name),
        Concurrent::CreateIndex(None) => Leftover::Refuse(
            "an unnamed CREATE INDEX CONCURRENTLY leaves an INVALID index under a generated name; name the index so a retry can drop it",
        ),
        Concurrent::Other => Leftover::Refuse(
            "REINDEX/DETACH … CONCURRENTLY leave intermediate state when they fail and are not retried",
        ),
    }
}

/// The last attempt's lock timeout, how many attempts were made, and who was seen blocking.
pub(super) struct GaveUp {
    pub(super) error: sqlx::Error,
    pub(super) attempts: u32,
    pub(super) blockers: Vec<BlockingSession>,
}

/// A no-transaction statement that failed, from [`Migrator::run_statements_retried`].
pub(super) struct StatementFailure<'s> {
    pub(super) offset: usize,
    pub(super) text: &'s str,
    pub(super) error: sqlx::Error,
    pub(super) attempts: u32,
    pub(super) blockers: Vec<BlockingSession>,
}

/// Which multi-transaction form a statement is, if any.
#[derive(Debug, PartialEq, Eq)]
enum Concurrent {
    None,
    /// `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name`, with the name if given.
    CreateIndex(Option<String>),
    DropIndex,
    Other,
}

fn concurrent_form(statement: &str) -> Concurrent {
    let words: Vec<_> = tokens(statement)
        .filter(|t| t.kind != TokenKind::Comment)
        .collect();
    if !words.iter().any(|t| t.is_word("concurrently")) {
        return Concurrent::None;
    }
    let mut i = 0;
    let mut next = |kw: &str| {
        let hit = words.get(i).is_some_and(|t| t.is_word(kw));
        if hit {
            i += 1;
        }
        hit
    };
    if next("create") {
        next("unique");
        if next("index") && next("concurrently") {
            if next("if") {
                next("not");
                next("exists");
            }
            let name = words
                .get(i)
                .filter(|t| !t.is_word("on"))
                .and_then(|t| t.name());
            return Concurrent::CreateIndex(name);
        }
        return Concurrent::Other;
    }
    if next("drop") && next("index") {
        return Concurrent::DropIndex;
    }
    Concurrent::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_forms_are_told_apart() {
        assert_eq!(concurrent_form("ALTER TABLE t ADD c int"), Concurrent::None);
        assert_eq!(
            concurrent_form("CREATE INDEX CONCURRENTLY t_c_idx ON t (c)"),
            Concurrent::CreateIndex(Some("t_c_idx".into()))
        );
        assert_eq!(
            concurrent_form(
                "-- why\ncreate unique index concurrently if not exists \"T_idx\" on t (c)"
            ),
            Concurrent::CreateIndex(Some("T_idx".into()))
        );
        assert_eq!(
            concurrent_form("CREATE INDEX CONCURRENTLY ON t (c)"),
            Concurrent::CreateIndex(None)
        );
        assert_eq!(
            concurrent_form("DROP INDEX CONCURRENTLY IF EXISTS t_c_idx"),
            Concurrent::DropIndex
        );
        assert_eq!(
            concurrent_form("REINDEX INDEX CONCURRENTLY t_c_idx"),
            Concurrent::Other
        );
        assert_eq!(
            concurrent_form("ALTER TABLE p DETACH PARTITION c CONCURRENTLY"),
            Concurrent::Other
        );
    }
}

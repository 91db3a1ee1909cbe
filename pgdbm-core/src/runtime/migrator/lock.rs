//! The lock protocol, in one place.
//!
//! A run holds, on a dedicated connection of its own, two advisory locks, taken together or not
//! at all ([`TRY_LOCK_BOTH`]):
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
//!
//! Behind a pooler in transaction mode ([`Migrator::transaction_pooler`]) a session lock would
//! stay on a server connection that other clients then use, so the same two keys are taken with
//! `pg_try_advisory_xact_lock` ([`TRY_XACT_LOCK_BOTH`]) at the start of each file's transaction,
//! and the history is read again inside it (as pgdbm 0.5.0 does). The history row is written
//! before the file runs, so a file that commits by itself (its own `COMMIT`) commits its row
//! with it.
//!
//! Every tool that changes the history (repair, baseline, revert, mark-unapplied) takes the
//! same locks, in the same form.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;

use super::{Migrator, exec};
use crate::runtime::error::{Error, Result};

/// Lock space for `pg_try_advisory_lock(int4, int4)`: the first key is this constant's hash,
/// the second the hash of `schema.module`.
const LOCK_NAMESPACE: &str = "pgdbm_migration";

/// Takes our lock and pgdbm (Python)'s, or neither (CASE evaluates its branches lazily, and the
/// inner ELSE releases ours when pgdbm's is taken: `NOT true` is false).
const TRY_LOCK_BOTH: &str = "SELECT CASE WHEN pg_try_advisory_lock(hashtext($1), hashtext($2)) \
     THEN CASE WHEN pg_try_advisory_lock(hashtext('pgdbm_migration_' || $3)) THEN true \
     ELSE NOT pg_advisory_unlock(hashtext($1), hashtext($2)) END ELSE false END";

/// The transaction-level form, for pooler mode: both or neither, since a `false` from either
/// is followed by `ROLLBACK`, which releases the other.
const TRY_XACT_LOCK_BOTH: &str = "SELECT pg_try_advisory_xact_lock(hashtext($1), hashtext($2)) \
     AND pg_try_advisory_xact_lock(hashtext('pgdbm_migration_' || $3))";

/// Who holds either key, for the timeout message.
const HOLDER: &str = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
     AND ((objsubid = 2 AND classid = hashtext($1)::oid AND objid = hashtext($2)::oid) \
     OR (objsubid = 1 AND objid = (hashtext('pgdbm_migration_' || $3)::bigint & 4294967295)::oid)) \
     AND pid <> pg_backend_pid() LIMIT 1";

impl Migrator {
    /// Takes the session locks (direct connections). Held until the connection closes.
    pub(super) async fn lock(&self, conn: &mut PgConnection) -> Result<()> {
        self.poll_lock(conn, false).await
    }

    /// Opens a transaction holding the transaction-level locks (pooler mode): the caller
    /// commits or rolls back, which releases them.
    pub(super) async fn lock_in_transaction(&self, conn: &mut PgConnection) -> Result<()> {
        self.poll_lock(conn, true).await
    }

    /// Starts one step of a run that changes the history: a transaction, under the locks. On a
    /// direct connection the session locks are taken at the first step and kept; behind a
    /// transaction pooler every step takes them anew, inside its transaction.
    pub(super) async fn begin_step(&self, conn: &mut PgConnection, first: bool) -> Result<()> {
        if self.behind_transaction_pooler() {
            return self.lock_in_transaction(conn).await;
        }
        if first {
            self.lock(conn).await?;
        }
        exec(conn, "BEGIN").await
    }

    async fn poll_lock(&self, conn: &mut PgConnection, in_transaction: bool) -> Result<()> {
        let key = self.lock_key();
        let waited = Instant::now();
        let mut announced = false;
        let sql = if in_transaction {
            TRY_XACT_LOCK_BOTH
        } else {
            TRY_LOCK_BOTH
        };
        loop {
            // try-lock and poll: a blocking pg_advisory_lock would hold a snapshot while it
            // waits, and another runner's CREATE INDEX CONCURRENTLY waits for every snapshot.
            // In pooler mode each try is a transaction of its own, so a waiter is never left
            // idle in a transaction between tries either.
            //
            // Both keys or neither: ours for (schema, module), and pgdbm (Python)'s for the
            // module, `hashtext('pgdbm_migration_' || module)` as one bigint key. It excludes
            // pgdbm's session lock and its per-file transaction lock alike, so the two runners
            // never apply the same module at once.
            if in_transaction {
                exec(conn, "BEGIN").await?;
            }
            let got: std::result::Result<bool, _> = sqlx::query_scalar(sql)
                .bind(LOCK_NAMESPACE)
                .bind(&key)
                .bind(&self.module)
                .persistent(false)
                .fetch_one(&mut *conn)
                .await;
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    if in_transaction {
                        let _ = exec(conn, "ROLLBACK").await;
                    }
                    return Err(Error::query(sql, e));
                }
            };
            if got {
                return Ok(());
            }
            if in_transaction {
                exec(conn, "ROLLBACK").await?;
            }
            if waited.elapsed() >= self.lock_timeout {
                let holder: Option<i32> = sqlx::query_scalar(HOLDER)
                    .bind(LOCK_NAMESPACE)
                    .bind(&key)
                    .bind(&self.module)
                    .persistent(false)
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
}

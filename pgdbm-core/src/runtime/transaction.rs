//! Transactions with templating, nested transactions as savepoints, rollback on drop.

use std::sync::Arc;

use sqlx::FromRow;
use sqlx::postgres::{PgConnection, PgRow, PgTransactionManager, Postgres};
use sqlx_core::transaction::TransactionManager;

use super::copy;
use super::database::Database;
use super::error::{Cut, Error, QueryError, Result, TransactionLost};
use super::observe::{SqlText, record_cut};
use super::params::{CopyRow, Params};
use super::pool::{Deadline, PoolObject, PooledConn, is_connection_lost};
use super::query::{self, QueryCtx};

enum TxConn<'a> {
    /// A top-level transaction owns its pooled connection.
    Owned(Option<PoolObject>),
    /// A savepoint borrows its parent's connection.
    Nested(&'a mut PooledConn),
}

/// Runs `$body` (an expression of the bare connection `$conn` and the arguments `$a`) as one
/// statement of `$tx` under the connection's watch, with the handle's deadline; a failure goes
/// through `fail` (and, when the watch cut it, into the statistics of `$ctx`). Without a
/// context and arguments: a statement of the transaction itself (`SAVEPOINT`, `COMMIT`, …).
macro_rules! in_tx {
    ($tx:ident, $sql:expr, $ctx:expr, $args:expr, |$conn:ident, $a:ident| $body:expr) => {{
        let $a = $args;
        in_tx!(@run $tx, $sql, Some($ctx), |$conn| $body)
    }};
    ($tx:ident, $sql:expr, |$conn:ident| $body:expr) => {
        in_tx!(@run $tx, $sql, None, |$conn| $body)
    };
    (@run $tx:ident, $sql:expr, $ctx:expr, |$conn:ident| $body:expr) => {{
        let deadline = Deadline::starting_now($tx.db.deadline);
        let pooled = $tx.pooled();
        let $conn = &mut pooled.conn;
        let r = pooled.watch.run(deadline.as_ref(), $body).await;
        r.map_err(|e| {
            let ctx: Option<&QueryCtx<'_>> = $ctx;
            if let Some(ctx) = ctx {
                record_cut(ctx, SqlText::Borrowed($sql), &e);
            }
            $tx.fail($sql, e)
        })
    }};
}

/// A transaction (or, nested, a savepoint) with the same query methods as [`Database`], all
/// templated for the same schema. Dropping it without [`commit`](Self::commit) rolls it back.
///
/// `&mut tx` is a sqlx executor inside the transaction, with the same schema check as its
/// [`Database`] handle: `tsql!(…).fetch_one(&mut tx)`.
pub struct Transaction<'a> {
    conn: TxConn<'a>,
    pub(crate) db: Database,
    open: bool,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("schema", &self.db.schema())
            .field("nested", &matches!(self.conn, TxConn::Nested(_)))
            .field("open", &self.open)
            .finish()
    }
}

impl Transaction<'static> {
    /// A transaction on `obj`, on which `BEGIN` has run.
    pub(crate) fn begun(db: Database, obj: PoolObject) -> Self {
        Transaction {
            conn: TxConn::Owned(Some(obj)),
            db,
            open: true,
        }
    }
}

impl<'a> Transaction<'a> {
    pub(crate) fn pooled(&mut self) -> &mut PooledConn {
        match &mut self.conn {
            TxConn::Owned(obj) => obj.as_mut().expect("connection present until drop"),
            TxConn::Nested(c) => c,
        }
    }

    fn conn(&mut self) -> &mut PgConnection {
        &mut self.pooled().conn
    }

    /// The error for a failed statement. A lost connection is never retried here: the server
    /// rolled the transaction back, so the caller gets [`Error::TransactionLost`] and must run
    /// the whole transaction again.
    fn fail(&mut self, sql: &str, e: sqlx::Error) -> Error {
        if !is_connection_lost(&e) {
            return Error::query(sql.to_string(), e);
        }
        let pool = self.db.inner.pool.clone();
        pool.after_cut(&self.pooled().watch, &e);
        if Cut::of(&e).is_some_and(Cut::is_deadline) {
            if let TxConn::Owned(Some(obj)) = &mut self.conn {
                obj.broken = true;
            }
            pool.outage.note_lost();
            return Error::statement(sql, e, true);
        }
        match &mut self.conn {
            TxConn::Owned(Some(obj)) => self.db.inner.pool.lost(obj),
            // A savepoint's connection belongs to its parent, which drops it when it fails too.
            _ => self.db.inner.pool.outage.note_lost(),
        }
        // Only a top-level COMMIT can have taken effect: RELEASE SAVEPOINT commits nothing.
        let during_commit = sql == "COMMIT" && matches!(self.conn, TxConn::Owned(_));
        Error::TransactionLost(Box::new(TransactionLost::new(
            QueryError::new(sql, e),
            during_commit,
        )))
    }

    /// The schema placeholders render into.
    pub fn schema(&self) -> Option<&str> {
        self.db.schema()
    }

    /// Nesting depth: 1 for a transaction, 2 for its first savepoint, …
    pub fn depth(&self) -> usize {
        match &self.conn {
            TxConn::Owned(Some(obj)) => PgTransactionManager::get_transaction_depth(&obj.conn),
            TxConn::Owned(None) => 0,
            TxConn::Nested(c) => PgTransactionManager::get_transaction_depth(&c.conn),
        }
    }

    query_methods!(in_tx, mut);

    /// The handle whose schema renders the SQL (for the shared query methods); a clone, so a
    /// statement can borrow the transaction's connection meanwhile.
    fn schema_handle(&self) -> Database {
        self.db.clone()
    }

    /// Runs a statement once per parameter set; returns the total rows affected.
    ///
    /// # Errors
    ///
    /// As [`execute`](Self::execute), for the first parameter set that fails: [`Error::Template`],
    /// [`Error::Query`] (the transaction is then aborted), [`Error::TransactionLost`] when the
    /// connection is lost, [`Error::Timeout`] when the handle's deadline passes.
    pub async fn execute_many<P, I>(&mut self, sql: &str, params: I) -> Result<u64>
    where
        P: Params,
        I: IntoIterator<Item = P>,
    {
        let sql = self.db.render(sql)?;
        let db = self.db.clone();
        let mut total = 0;
        for p in params {
            let mut ctx = db.ctx();
            let args = query::encode(&sql, p, &mut ctx)?;
            total += in_tx!(self, &sql, &ctx, args, |conn, a| query::execute(
                conn,
                &ctx,
                &sql,
                Some(a)
            ))?;
        }
        Ok(total)
    }

    /// Bulk-loads rows with COPY inside this transaction (see [`Database::copy_in`]).
    ///
    /// # Errors
    ///
    /// As [`Database::copy_in`], without the checkout errors (the transaction's connection is
    /// used); a lost connection is [`Error::TransactionLost`].
    pub async fn copy_in<R, I>(&mut self, table: &str, columns: &[&str], rows: I) -> Result<u64>
    where
        R: CopyRow,
        I: IntoIterator<Item = R>,
    {
        let stmt = copy::statement(&self.db, table, columns)?;
        match copy::copy_in(self.conn(), &stmt, columns.len(), rows).await {
            Err(Error::Query(q)) => {
                let (sql, e) = q.into_parts();
                Err(self.fail(&sql, e))
            }
            other => other,
        }
    }

    /// Opens a nested transaction (a SAVEPOINT). Dropping it without commit rolls back to the
    /// savepoint only; the outer transaction carries on.
    ///
    /// # Errors
    ///
    /// [`Error::Query`] when `SAVEPOINT` fails (the transaction is aborted, say),
    /// [`Error::TransactionLost`] when the connection is lost, [`Error::Timeout`] on the deadline.
    pub async fn transaction(&mut self) -> Result<Transaction<'_>> {
        let db = self.db.clone();
        in_tx!(self, "SAVEPOINT", |conn| PgTransactionManager::begin(
            conn, None
        ))?;
        Ok(Transaction {
            conn: TxConn::Nested(self.pooled()),
            db,
            open: true,
        })
    }

    /// Commits (or, nested, releases the savepoint).
    ///
    /// # Errors
    ///
    /// [`Error::Query`] when the server refuses `COMMIT` (a deferred constraint, a serialization
    /// failure), [`Error::Timeout`] on the deadline, [`Error::TransactionLost`] when the connection
    /// is lost; for a top-level `COMMIT` its [`during_commit`](TransactionLost::during_commit) is
    /// `true`: the outcome is unknown.
    pub async fn commit(mut self) -> Result<()> {
        in_tx!(self, "COMMIT", |conn| PgTransactionManager::commit(conn))?;
        self.open = false;
        Ok(())
    }

    /// Rolls back (or, nested, rolls back to the savepoint).
    ///
    /// # Errors
    ///
    /// [`Error::Query`] when `ROLLBACK` fails, [`Error::TransactionLost`] when the connection is
    /// lost (the server rolls the transaction back itself), [`Error::Timeout`] on the deadline.
    pub async fn rollback(mut self) -> Result<()> {
        in_tx!(self, "ROLLBACK", |conn| {
            PgTransactionManager::rollback(conn)
        })?;
        self.open = false;
        Ok(())
    }

    /// The bare sqlx connection, inside the transaction. SQL run on it is neither templated nor
    /// checked: a `tsql!` query runs in the schema it was compiled for. `&mut tx` is the
    /// checked executor.
    pub fn connection(&mut self) -> &mut PgConnection {
        self.conn()
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        match &mut self.conn {
            // The ROLLBACK TO SAVEPOINT is queued and goes out before the parent's next statement.
            TxConn::Nested(c) => PgTransactionManager::start_rollback(&mut c.conn),
            TxConn::Owned(slot) => {
                let Some(mut obj) = slot.take() else { return };
                PgTransactionManager::start_rollback(&mut obj.conn);
                // A queued ROLLBACK would only be sent at the connection's next use, keeping
                // locks held while it sits idle in the pool: send it now.
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => {
                        let within = self.db.inner.pool.liveness().check_timeout;
                        handle.spawn(async move {
                            use sqlx::Connection;
                            let PooledConn { conn, watch, .. } = &mut *obj;
                            let ping = watch.run(None, conn.ping());
                            if !matches!(tokio::time::timeout(within, ping).await, Ok(Ok(()))) {
                                obj.broken = true;
                            }
                        });
                    }
                    // No runtime to send it on: closing the socket makes the server roll back.
                    Err(_) => obj.broken = true,
                }
            }
        }
    }
}

//! Behind a transaction pooler (PgBouncer's `pool_mode = transaction`): each statement outside
//! a transaction runs in a transaction of its own.

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgTransactionManager};
use sqlx_core::transaction::TransactionManager;

use super::{Deadline, PoolObject, PoolShared, Prepare, is_connection_lost};
use crate::runtime::error::Result;

impl PoolShared {
    /// A connection for one statement outside a transaction. Behind a transaction pooler the
    /// statement needs a transaction of its own: sqlx sends a statement with arguments in two
    /// steps, each ending in `Sync` (Parse/Describe, then Bind/Execute), and between them the
    /// pooler may hand the next step to another server, which lacks the statement. Finish with
    /// [`end_statement`](Self::end_statement).
    ///
    /// `lane` is a tenant handle's [`lane_key`](super::lane_key). Within the call's `deadline` if it has one (a deadline that passes first is a timeout of
    /// `sql`, not sent).
    pub(crate) async fn get_for_statement(
        &self,
        lane: Option<u64>,
        deadline: Option<&Deadline>,
        sql: &str,
    ) -> Result<PoolObject> {
        let prepare = if self.begin_sql.is_some() {
            Prepare::Begin
        } else {
            Prepare::Nothing
        };
        match deadline {
            None => self.checkout(prepare, lane).await,
            Some(_) => self.get_within(prepare, lane, deadline, sql).await,
        }
    }

    /// Ends what [`get_for_statement`](Self::get_for_statement) began: commits after success
    /// (`ok`), rolls back after a failure. A no-op on a direct connection.
    pub(crate) async fn end_statement(
        &self,
        obj: &mut PoolObject,
        ok: bool,
    ) -> Result<(), sqlx::Error> {
        if self.begin_sql.is_none() {
            return Ok(());
        }
        let super::PooledConn { conn, watch, .. } = &mut **obj;
        let r = watch.run(None, self.end_on(conn, ok)).await;
        if let Err(e) = &r
            && is_connection_lost(e)
        {
            self.lost(obj);
        }
        r
    }

    /// `BEGIN` with the settings, behind a transaction pooler (a no-op otherwise), on a
    /// connection already checked out (see [`get_for_statement`](Self::get_for_statement)).
    pub(crate) async fn begin_on(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        match &self.begin_sql {
            Some(sql) => PgTransactionManager::begin(conn, Some(sql.clone())).await,
            None => Ok(()),
        }
    }

    /// Commits (`ok`) or rolls back what [`begin_on`](Self::begin_on) began.
    pub(crate) async fn end_on(
        &self,
        conn: &mut PgConnection,
        ok: bool,
    ) -> Result<(), sqlx::Error> {
        if self.begin_sql.is_none() || !conn.is_in_transaction() && !ok {
            return Ok(());
        }
        if ok {
            PgTransactionManager::commit(conn).await
        } else {
            PgTransactionManager::rollback(conn).await
        }
    }

    /// Whether each statement runs in a transaction of its own (behind a transaction pooler).
    pub(crate) fn wraps_statements(&self) -> bool {
        self.begin_sql.is_some()
    }
}

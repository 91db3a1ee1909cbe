//! The history table: creating it, reading it, checking the files against it.

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgConnection;

use crate::ident::quote_identifier;
use crate::migrations::{Migration, MigrationSet};
use crate::runtime::error::{Error, Result};
use crate::runtime::pool::create_if_missing;

use super::*;

impl Migrator {
    pub(super) async fn table_exists(&self, conn: &mut PgConnection) -> Result<bool> {
        let name = self.qualified_table();
        let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(&name)
            .persistent(false)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::query("SELECT to_regclass($1)", e))?;
        Ok(found.is_some())
    }

    /// Creates the schema and history table if missing. `in_transaction`: inside the caller's
    /// transaction (pooler mode), where a lost creation race is undone to a savepoint.
    pub(super) async fn ensure_table(
        &self,
        conn: &mut PgConnection,
        in_transaction: bool,
    ) -> Result<()> {
        let table = self.qualified_table();
        let mut statements = Vec::new();
        if let Some(s) = self.db.schema() {
            // Usually there already (Database::connect creates it); asking first spares the
            // server's "already exists, skipping" notice on every run.
            let sql = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)";
            let exists: bool = sqlx::query_scalar(sql)
                .bind(s)
                .persistent(false)
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
            if in_transaction {
                exec(conn, "SAVEPOINT pgdbm_create").await?;
                if create_if_missing(conn, &sql).await.is_err() {
                    // Lost a race with another module's runner: the object exists now.
                    exec(conn, "ROLLBACK TO SAVEPOINT pgdbm_create").await?;
                    create_if_missing(conn, &sql).await?;
                }
                exec(conn, "RELEASE SAVEPOINT pgdbm_create").await?;
            } else {
                create_if_missing(conn, &sql).await?;
            }
        }
        Ok(())
    }

    /// [`applied`](Self::applied) in a transaction of its own: its statements then share one
    /// server connection even behind a transaction pooler.
    pub(super) async fn read_applied(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<(String, String, PrimitiveDateTime)>> {
        exec(conn, "BEGIN").await?;
        let r = self.applied(conn).await;
        let _ = exec(conn, "COMMIT").await;
        r
    }

    /// Writes the history row of `m` and returns its id.
    pub(super) async fn insert_history(
        &self,
        conn: &mut PgConnection,
        m: &Migration,
        ms: Option<i32>,
    ) -> Result<i32> {
        let sql = format!(
            "INSERT INTO {} (filename, checksum, module_name, execution_time_ms) VALUES ($1, $2, $3, $4) RETURNING id",
            self.qualified_table()
        );
        sqlx::query_scalar(AssertSqlSafe(sql.clone()))
            .bind(&m.filename)
            .bind(&m.checksum)
            .bind(&self.module)
            .bind(ms)
            .persistent(false)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::query(sql, e))
    }

    /// Records how long the file took. Integers only in the text: a file that committed by
    /// itself leaves this outside any transaction, where the simple protocol is safe behind a
    /// pooler.
    pub(super) async fn set_execution_time(
        &self,
        conn: &mut PgConnection,
        id: i32,
        ms: i32,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET execution_time_ms = {ms} WHERE id = {id}",
            self.qualified_table()
        );
        sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(|e| Error::query(sql, e))
    }

    /// Removes the history row of `filename` in this module (a repeatable file's, for
    /// `repeatable/NAME.sql`); whether there was one.
    pub(super) async fn delete_history(
        &self,
        conn: &mut PgConnection,
        filename: &str,
    ) -> Result<bool> {
        let sql = format!(
            "DELETE FROM {} WHERE filename = $1 AND module_name = $2",
            self.qualified_table()
        );
        let module = if crate::migrations::is_repeatable(filename) {
            self.repeatable_module()
        } else {
            self.module.clone()
        };
        let n = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(filename)
            .bind(module)
            .persistent(false)
            .execute(&mut *conn)
            .await
            .map_err(|e| Error::query(sql, e))?
            .rows_affected();
        Ok(n > 0)
    }

    /// (filename, checksum, applied_at) of this module's history; empty without a table.
    pub(super) async fn applied(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<(String, String, PrimitiveDateTime)>> {
        if !self.table_exists(conn).await? {
            return Ok(Vec::new());
        }
        // pgdbm counts rows without a module as belonging to every module.
        let sql = format!(
            "SELECT filename::text, checksum::text, applied_at \
             FROM {} WHERE module_name = $1 OR module_name IS NULL ORDER BY id",
            self.qualified_table()
        );
        sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(&self.module)
            .persistent(false)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| Error::query(sql, e))
    }

    pub(super) fn check_drift(
        &self,
        set: &MigrationSet,
        applied: &[(String, String, PrimitiveDateTime)],
    ) -> Result<()> {
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
}

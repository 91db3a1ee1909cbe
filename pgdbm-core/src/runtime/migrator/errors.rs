//! Errors that name the file, statement and position, and small helpers the steps share.

use std::time::Instant;

use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnection, PgDatabaseError};

use crate::migrations::{Migration, char_position_to_byte_offset, line_col, split_statements};
use crate::runtime::error::{Aftermath, Error, MigrationError, Result};
use crate::template;

use super::*;

impl Migrator {
    /// Turns a failure of a whole file into an error naming the statement and its position;
    /// `down` for a down file being reverted.
    pub(super) async fn file_error(
        &self,
        conn: &mut PgConnection,
        m: &Migration,
        rendered: &str,
        map: &template::OffsetMap,
        e: sqlx::Error,
        down: bool,
    ) -> Error {
        let after = if down {
            Aftermath::DownRolledBack
        } else {
            Aftermath::RolledBack
        };
        if let Some(pos) = server_position(&e) {
            let offset = char_position_to_byte_offset(rendered, pos);
            let stmt = split_statements(rendered)
                .into_iter()
                .rev()
                .find(|s| s.offset <= offset);
            let text = stmt.map_or(rendered, |s| s.text);
            return self.located(m, map, offset, Some(text.to_string()), e, after);
        }
        // No position (a constraint violated at run time, say): find the statement by running
        // them one at a time in a transaction that is rolled back.
        let mut culprit = None;
        if exec(conn, "BEGIN").await.is_ok() {
            for stmt in split_statements(rendered) {
                if let Err(e2) = sqlx::raw_sql(AssertSqlSafe(stmt.text.to_string()))
                    .execute(&mut *conn)
                    .await
                {
                    culprit = Some((stmt.offset, stmt.text.to_string(), server_position(&e2)));
                    break;
                }
            }
            let _ = exec(conn, "ROLLBACK").await;
        }
        match culprit {
            Some((offset, text, pos)) => {
                let at = offset + pos.map_or(0, |p| char_position_to_byte_offset(&text, p));
                self.located(m, map, at, Some(text), e, after)
            }
            None => self.located_none(m, e, after),
        }
    }

    /// A statement of a no-transaction file failed (`down`: of a down file being reverted).
    pub(super) fn statement_error(
        &self,
        m: &Migration,
        map: &template::OffsetMap,
        stmt_offset: usize,
        stmt_text: &str,
        e: sqlx::Error,
        down: bool,
    ) -> Error {
        let at = stmt_offset
            + server_position(&e).map_or(0, |p| char_position_to_byte_offset(stmt_text, p));
        let after = if down {
            Aftermath::DownPartlyApplied
        } else {
            Aftermath::PartlyApplied
        };
        self.located(m, map, at, Some(stmt_text.to_string()), e, after)
    }

    pub(super) fn located(
        &self,
        m: &Migration,
        map: &template::OffsetMap,
        rendered_offset: usize,
        statement: Option<String>,
        e: sqlx::Error,
        aftermath: Aftermath,
    ) -> Error {
        let original = map.to_template(rendered_offset).min(m.content.len());
        let mut message = server_message(&e);
        if !m.no_transaction
            && matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("25001"))
        {
            message.push_str(
                ". Statements such as CREATE INDEX CONCURRENTLY cannot run in a transaction: put a line `-- pgdbm:no-transaction` in the file",
            );
        }
        Error::Migration(Box::new(MigrationError {
            file: Some(m.filename.clone()),
            position: Some(line_col(&m.content, original)),
            statement,
            message,
            aftermath,
            source: Some(Box::new(e)),
        }))
    }

    pub(super) fn located_none(
        &self,
        m: &Migration,
        e: sqlx::Error,
        aftermath: Aftermath,
    ) -> Error {
        Error::Migration(Box::new(MigrationError {
            file: Some(m.filename.clone()),
            position: None,
            statement: None,
            message: server_message(&e),
            aftermath,
            source: Some(Box::new(e)),
        }))
    }
}

pub(super) async fn exec(conn: &mut PgConnection, sql: &'static str) -> Result<()> {
    sqlx::raw_sql(sql)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| Error::query(sql, e))
}

pub(super) fn elapsed_ms(started: Instant) -> i32 {
    // pgdbm records at least 1 ms.
    (started.elapsed().as_millis().min(i32::MAX as u128) as i32).max(1)
}

pub(super) fn server_position(e: &sqlx::Error) -> Option<usize> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    match db.try_downcast_ref::<PgDatabaseError>()?.position()? {
        sqlx::postgres::PgErrorPosition::Original(p) => Some(p),
        sqlx::postgres::PgErrorPosition::Internal { .. } => None,
    }
}

pub(super) fn server_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.try_downcast_ref::<PgDatabaseError>() {
            Some(pg) => {
                let mut s = format!("{} (SQLSTATE {})", pg.message(), pg.code());
                if let Some(d) = pg.detail() {
                    s.push_str(&format!("; detail: {d}"));
                }
                if let Some(h) = pg.hint() {
                    s.push_str(&format!("; hint: {h}"));
                }
                s
            }
            None => db.message().to_string(),
        },
        other => other.to_string(),
    }
}

pub(super) fn source_error(e: crate::migrations::SourceError) -> Error {
    Error::Migration(Box::new(MigrationError {
        file: None,
        position: None,
        statement: None,
        message: e.to_string(),
        aftermath: Aftermath::Unchanged,
        source: Some(Box::new(e)),
    }))
}

/// Runs a no-transaction file statement by statement (outside a transaction, since statements
/// such as `CREATE INDEX CONCURRENTLY` refuse one), stopping at the first failure, which comes
/// back with the failing statement's offset and text for [`Migrator::statement_error`].
pub(super) async fn run_statements<'s>(
    conn: &mut PgConnection,
    sql: &'s str,
) -> std::result::Result<(), (usize, &'s str, sqlx::Error)> {
    for stmt in split_statements(sql) {
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(stmt.text.to_string()))
            .execute(&mut *conn)
            .await
        {
            return Err((stmt.offset, stmt.text, e));
        }
    }
    Ok(())
}

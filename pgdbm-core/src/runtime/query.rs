//! Running one statement on one connection, with a span, timing and the slow-query warning.
//! `Database` and `Transaction` both come through here.

use std::sync::Arc;

use futures_util::TryStreamExt;
use sqlx::postgres::{PgArguments, PgConnection, PgRow, Postgres};
use sqlx::{AssertSqlSafe, FromRow, Row};

use super::observe::{SqlText, observe};
use super::params::Params;
use crate::sql_lex::{TokenKind, tokens};

pub(crate) use super::observe::QueryCtx;

/// Binds `params`; an encoding failure is a query error naming the SQL. When the pool keeps
/// statistics, the values' types go into `ctx` (never the values).
pub(crate) fn encode<P: Params>(
    sql: &str,
    params: P,
    ctx: &mut QueryCtx<'_>,
) -> crate::runtime::error::Result<PgArguments> {
    if ctx.obs.stats.is_some() {
        ctx.args = Some(params.type_names().into());
    }
    params
        .into_arguments()
        .map_err(|e| crate::runtime::error::Error::query(sql, sqlx::Error::Encode(e)))
}

fn q(
    ctx: &QueryCtx<'_>,
    sql: &Arc<str>,
    args: PgArguments,
) -> sqlx::query::Query<'static, Postgres, PgArguments> {
    sqlx::query_with(AssertSqlSafe(sql.clone()), args).persistent(ctx.persistent)
}

pub(crate) async fn execute(
    conn: &mut PgConnection,
    ctx: &QueryCtx<'_>,
    sql: &Arc<str>,
    args: Option<PgArguments>,
) -> Result<u64, sqlx::Error> {
    observe(ctx, SqlText::Shared(sql), async {
        let n = match args {
            Some(args) => q(ctx, sql, args).execute(&mut *conn).await?.rows_affected(),
            // No arguments: the simple protocol, so a multi-statement script works (as pgdbm).
            None => sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                .execute(&mut *conn)
                .await?
                .rows_affected(),
        };
        Ok((n, n))
    })
    .await
}

/// The first row, decoded by `decode`.
async fn first_row<T>(
    conn: &mut PgConnection,
    ctx: &QueryCtx<'_>,
    sql: &Arc<str>,
    args: PgArguments,
    decode: impl FnOnce(&PgRow) -> Result<T, sqlx::Error> + Send,
) -> Result<Option<T>, sqlx::Error>
where
    T: Send,
{
    observe(ctx, SqlText::Shared(sql), async {
        let row = q(ctx, sql, args).fetch_optional(&mut *conn).await?;
        let value = row.as_ref().map(decode).transpose()?;
        Ok((row.is_some() as u64, value))
    })
    .await
}

pub(crate) async fn fetch_optional<T>(
    conn: &mut PgConnection,
    ctx: &QueryCtx<'_>,
    sql: &Arc<str>,
    args: PgArguments,
) -> Result<Option<T>, sqlx::Error>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    first_row(conn, ctx, sql, args, |r| T::from_row(r)).await
}

pub(crate) async fn fetch_all<T>(
    conn: &mut PgConnection,
    ctx: &QueryCtx<'_>,
    sql: &Arc<str>,
    args: PgArguments,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    observe(ctx, SqlText::Shared(sql), async {
        let rows: Vec<T> = q(ctx, sql, args)
            .fetch(&mut *conn)
            .map_err(sqlx::Error::from)
            .and_then(|row| async move { T::from_row(&row) })
            .try_collect()
            .await?;
        Ok((rows.len() as u64, rows))
    })
    .await
}

/// The first column of the first row.
pub(crate) async fn fetch_value<T>(
    conn: &mut PgConnection,
    ctx: &QueryCtx<'_>,
    sql: &Arc<str>,
    args: PgArguments,
) -> Result<Option<T>, sqlx::Error>
where
    T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + Send + Unpin,
{
    first_row(conn, ctx, sql, args, |r| {
        if r.is_empty() {
            return Err(sqlx::Error::ColumnIndexOutOfBounds { index: 0, len: 0 });
        }
        r.try_get::<T, _>(0)
    })
    .await
}

/// Appends ` RETURNING id` unless the statement already has a RETURNING clause.
///
/// Unlike pgdbm, trailing `;` and white space are stripped in any order, and `RETURNING` inside a
/// string literal, quoted identifier or comment does not count.
pub(crate) fn with_returning_id(sql: &str) -> String {
    let trimmed = sql.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    let mut has_returning = false;
    let mut ends_in_line_comment = false;
    for t in tokens(trimmed) {
        has_returning |= t.is_word("returning");
        ends_in_line_comment = t.kind == TokenKind::Comment && t.text.starts_with("--");
    }
    if has_returning {
        trimmed.to_string()
    } else if ends_in_line_comment {
        // A trailing line comment would swallow the clause.
        format!("{trimmed}\nRETURNING id")
    } else {
        format!("{trimmed} RETURNING id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_returning_id() {
        assert_eq!(
            with_returning_id("INSERT INTO t (a) VALUES ($1)"),
            "INSERT INTO t (a) VALUES ($1) RETURNING id"
        );
        assert_eq!(
            with_returning_id("INSERT INTO t (a) VALUES ($1) ;  \n"),
            "INSERT INTO t (a) VALUES ($1) RETURNING id"
        );
        assert_eq!(
            with_returning_id("INSERT INTO t (a) VALUES ($1) returning user_id;"),
            "INSERT INTO t (a) VALUES ($1) returning user_id"
        );
        assert_eq!(
            with_returning_id("INSERT INTO t (a) VALUES ('RETURNING')"),
            "INSERT INTO t (a) VALUES ('RETURNING') RETURNING id"
        );
        assert_eq!(
            with_returning_id("INSERT INTO t (a) VALUES ($$ returning $$), (E'\\' returning')"),
            "INSERT INTO t (a) VALUES ($$ returning $$), (E'\\' returning') RETURNING id"
        );
        assert_eq!(
            with_returning_id("INSERT INTO t (\"returning\") VALUES (1) -- returning\n"),
            "INSERT INTO t (\"returning\") VALUES (1) -- returning\nRETURNING id"
        );
    }
}

//! `&Database` as a sqlx executor, so `sqlx::query!(…).fetch_one(&db)` (and `tsql!`) work.
//!
//! Each call checks a connection out for the duration of the call. `fetch` / `fetch_many`
//! collect the rows before yielding them, because the stream cannot own the pooled connection it
//! borrows; to stream a large result use [`Database::acquire`] and run on `&mut *conn`.

use either::Either;
use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::postgres::{PgQueryResult, PgRow, PgStatement, PgTypeInfo, Postgres};
use sqlx::{Execute, Executor, SqlStr};

use super::database::Database;
use super::error::Error;
use super::pool::is_connection_lost;

fn to_sqlx(e: Error) -> sqlx::Error {
    match e {
        Error::PoolTimeout { .. } => sqlx::Error::PoolTimedOut,
        Error::PoolClosed => sqlx::Error::PoolClosed,
        Error::Connect(c) => c.source,
        other => sqlx::Error::Configuration(Box::new(other)),
    }
}

impl<'c> Executor<'c> for &'c Database {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let fut = async move {
            let mut conn = self.acquire().await.map_err(to_sqlx)?;
            let items: Vec<Result<Either<PgQueryResult, PgRow>, sqlx::Error>> =
                conn.fetch_many(query).collect().await;
            if items
                .iter()
                .any(|r| matches!(r, Err(e) if is_connection_lost(e)))
            {
                conn.discard();
            }
            Ok::<_, sqlx::Error>(futures_util::stream::iter(items))
        };
        futures_util::stream::once(fut).try_flatten().boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        Box::pin(async move {
            let mut conn = self.acquire().await.map_err(to_sqlx)?;
            let r = conn.fetch_optional(query).await;
            if matches!(&r, Err(e) if is_connection_lost(e)) {
                conn.discard();
            }
            r
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut conn = self.acquire().await.map_err(to_sqlx)?;
            conn.prepare_with(sql, parameters).await
        })
    }

    fn describe<'e>(
        self,
        sql: SqlStr,
    ) -> BoxFuture<'e, Result<sqlx_core::describe::Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut conn = self.acquire().await.map_err(to_sqlx)?;
            conn.describe(sql).await
        })
    }
}

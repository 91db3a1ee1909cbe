//! `&Database` as a sqlx executor, so `sqlx::query!(…).fetch_one(&db)` (and `tsql!`) work.
//!
//! Each call checks a connection out for the duration of the call, under the same retry rule as
//! the `Database` methods ([`PoolShared::retry_after`](super::pool::PoolShared::retry_after)):
//! the query's SQL and arguments are taken once and replayed on another connection when the
//! server ended the session before the statement completed. `fetch` / `fetch_many` collect the
//! rows before yielding them, because the stream cannot own the pooled connection it borrows;
//! to stream a large result use [`Database::acquire`] and run on `&mut conn`.

use either::Either;
use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow, PgStatement, PgTypeInfo, Postgres};
use sqlx::{AssertSqlSafe, Execute, Executor, SqlSafeStr, SqlStr};
use sqlx_core::error::BoxDynError;

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

/// A query taken apart once so it can be run again.
#[derive(Clone)]
struct Replay {
    sql: SqlStr,
    args: Option<PgArguments>,
    statement: Option<PgStatement>,
    persistent: bool,
}

impl Replay {
    /// Takes `query` apart, with its SQL as `db` must run it: a `tsql!` query checked for another
    /// schema is re-targeted on a tenant handle of its module and refused on any other.
    fn take<'q, E: Execute<'q, Postgres>>(
        db: &Database,
        mut query: E,
    ) -> Result<Replay, sqlx::Error> {
        let statement = query.statement().cloned();
        let persistent = query.persistent();
        let args = query.take_arguments().map_err(sqlx::Error::Encode)?;
        Ok(Replay {
            sql: checked_sql(db, query.sql())?,
            args,
            statement,
            persistent,
        })
    }
}

fn checked_sql(db: &Database, sql: SqlStr) -> Result<SqlStr, sqlx::Error> {
    Ok(match db.check_compiled(sql.as_str()).map_err(to_sqlx)? {
        Some(retargeted) => AssertSqlSafe(retargeted).into_sql_str(),
        None => sql,
    })
}

impl<'q> Execute<'q, Postgres> for Replay {
    fn sql(self) -> SqlStr {
        self.sql
    }

    fn statement(&self) -> Option<&PgStatement> {
        self.statement.as_ref()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, BoxDynError> {
        Ok(self.args.take())
    }

    fn persistent(&self) -> bool {
        self.persistent
    }
}

/// Runs `run` on pooled connections until it succeeds or fails in a way the retry rule does not
/// retry; then the failure goes back to the caller as it was.
async fn retrying<T, X, F>(db: &Database, mut run: F) -> Result<T, X>
where
    X: Failure,
    F: for<'a> FnMut(&'a mut sqlx::PgConnection) -> BoxFuture<'a, Attempt<T, X>>,
{
    let pool = &db.inner.pool;
    let mut tries = 0;
    loop {
        tries += 1;
        let mut obj = pool.get().await.map_err(|e| X::from(to_sqlx(e)))?;
        match run(&mut obj.conn).await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Failed(x) if pool.retry_after(&mut obj, x.error(), tries) => continue,
            Attempt::Failed(x) => return Err(x),
            Attempt::Partial(v, lost) => {
                if lost {
                    pool.lost(&mut obj);
                }
                return Ok(v);
            }
        }
    }
}

enum Attempt<T, X> {
    Done(T),
    /// Failed before any statement completed.
    Failed(X),
    /// A statement completed before an error, which `.0` carries to the caller; `.1` tells
    /// whether the error lost the connection.
    Partial(T, bool),
}

impl<T> From<Result<T, sqlx::Error>> for Attempt<T, sqlx::Error> {
    fn from(r: Result<T, sqlx::Error>) -> Self {
        match r {
            Ok(v) => Attempt::Done(v),
            Err(e) => Attempt::Failed(e),
        }
    }
}

/// A failed attempt: the error that decides whether to retry, and what the caller gets if not.
trait Failure: From<sqlx::Error> {
    fn error(&self) -> &sqlx::Error;
}

impl Failure for sqlx::Error {
    fn error(&self) -> &sqlx::Error {
        self
    }
}

type Item = Result<Either<PgQueryResult, PgRow>, sqlx::Error>;

/// What `fetch_many` yielded up to and including its error (rows may come before it).
struct Unfinished {
    items: Vec<Item>,
    error: sqlx::Error,
}

impl From<sqlx::Error> for Unfinished {
    fn from(error: sqlx::Error) -> Self {
        Unfinished {
            items: Vec::new(),
            error,
        }
    }
}

impl Failure for Unfinished {
    fn error(&self) -> &sqlx::Error {
        &self.error
    }
}

impl Unfinished {
    fn into_items(mut self) -> Vec<Item> {
        self.items.push(Err(self.error));
        self.items
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
            let replay = Replay::take(self, query)?;
            let items = retrying(self, |conn| {
                let q = replay.clone();
                Box::pin(async move {
                    let mut items: Vec<Item> = conn.fetch_many(q).collect().await;
                    let Some(at) = items.iter().position(Result::is_err) else {
                        return Attempt::Done(items);
                    };
                    // A statement completed (its result arrived) before the error: running the
                    // query again could apply that statement twice.
                    if items[..at].iter().any(|i| matches!(i, Ok(Either::Left(_)))) {
                        let lost = matches!(&items[at], Err(e) if is_connection_lost(e));
                        return Attempt::Partial(items, lost);
                    }
                    let rest = items.split_off(at);
                    let error = match rest.into_iter().next() {
                        Some(Err(e)) => e,
                        _ => unreachable!("`at` is the position of an error"),
                    };
                    Attempt::Failed(Unfinished { items, error })
                })
            })
            .await
            .unwrap_or_else(Unfinished::into_items);
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
            let replay = Replay::take(self, query)?;
            retrying(self, |conn| {
                let q = replay.clone();
                Box::pin(async move { conn.fetch_optional(q).await.into() })
            })
            .await
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
            let sql = checked_sql(self, sql)?;
            retrying(self, |conn| {
                let sql = sql.clone();
                // Owned, because each attempt's future must not borrow from the caller.
                let parameters = parameters.to_vec();
                Box::pin(async move { conn.prepare_with(sql, &parameters).await.into() })
            })
            .await
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
            let sql = checked_sql(self, sql)?;
            retrying(self, |conn| {
                let sql = sql.clone();
                Box::pin(async move { conn.describe(sql).await.into() })
            })
            .await
        })
    }
}

/// `&mut Transaction` and `&mut PoolConnection` as sqlx executors: the connection's own, after
/// the schema check of [`Replay::take`]. No retry: a transaction's statements must not be run
/// again, and what runs on an acquired connection is the caller's.
macro_rules! checked_connection_executor {
    ($ty:ty, |$this:ident| $db:expr, $conn:expr) => {
        impl<'c> Executor<'c> for &'c mut $ty {
            type Database = Postgres;

            fn fetch_many<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
            where
                'c: 'e,
                E: 'q + Execute<'q, Postgres>,
            {
                let $this = self;
                match Replay::take($db, query) {
                    Ok(q) => $conn.fetch_many(q),
                    Err(e) => futures_util::stream::once(async { Err(e) }).boxed(),
                }
            }

            fn fetch_optional<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
            where
                'c: 'e,
                E: 'q + Execute<'q, Postgres>,
            {
                let $this = self;
                match Replay::take($db, query) {
                    Ok(q) => $conn.fetch_optional(q),
                    Err(e) => Box::pin(async { Err(e) }),
                }
            }

            fn prepare_with<'e>(
                self,
                sql: SqlStr,
                parameters: &'e [PgTypeInfo],
            ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
            where
                'c: 'e,
            {
                let $this = self;
                match checked_sql($db, sql) {
                    Ok(sql) => $conn.prepare_with(sql, parameters),
                    Err(e) => Box::pin(async { Err(e) }),
                }
            }

            fn describe<'e>(
                self,
                sql: SqlStr,
            ) -> BoxFuture<'e, Result<sqlx_core::describe::Describe<Postgres>, sqlx::Error>>
            where
                'c: 'e,
            {
                let $this = self;
                match checked_sql($db, sql) {
                    Ok(sql) => $conn.describe(sql),
                    Err(e) => Box::pin(async { Err(e) }),
                }
            }
        }
    };
}

checked_connection_executor!(
    super::transaction::Transaction<'_>,
    |tx| &tx.db,
    tx.connection()
);
checked_connection_executor!(super::pool::PoolConnection, |c| &c.db, &mut c.obj.conn);

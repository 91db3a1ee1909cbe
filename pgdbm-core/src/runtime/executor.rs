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
use super::error::{Cut, Error, QueryError, TransactionLost};
use super::observe::{Observation, QueryCtx, SqlText, observe, record_cut};
use super::pool::{ConnWatch, Deadline, PooledConn, is_connection_lost, watched_stream};
use sqlx::Arguments;
use tracing::Instrument;

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
        // Behind a transaction pooler a named statement may be missing on the next server
        // connection, or already made there by another client.
        let persistent = query.persistent() && !db.config().wraps_statements();
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
    Ok(
        match db.check_compiled(sql.as_str()).map_err(Error::into_sqlx)? {
            Some(retargeted) => AssertSqlSafe(retargeted).into_sql_str(),
            None => sql,
        },
    )
}

impl Replay {
    /// The context to observe this query on `db`.
    fn ctx<'d>(&self, db: &'d Database) -> QueryCtx<'d> {
        ctx_of(db, self.arg_count())
    }

    fn arg_count(&self) -> usize {
        self.args.as_ref().map_or(0, |a| a.len())
    }
}

/// The context to observe a sqlx query of `args` values on `db`: their types are not known
/// before the server resolves them, so the statistics show `?` for each.
fn ctx_of(db: &Database, args: usize) -> QueryCtx<'_> {
    let mut ctx = db.ctx();
    if ctx.obs.stats.is_some() {
        ctx.args = Some(vec!["?".to_string(); args].into());
    }
    ctx
}

/// Runs a `fetch_optional` as one observed statement.
async fn observed_optional(
    db: &Database,
    sql: &SqlStr,
    args: usize,
    fetch: impl Future<Output = Result<Option<PgRow>, sqlx::Error>>,
) -> Result<Option<PgRow>, sqlx::Error> {
    let ctx = ctx_of(db, args);
    observe(&ctx, SqlText::Borrowed(sql.as_str()), async {
        let row = fetch.await?;
        Ok((row.is_some() as u64, row))
    })
    .await
}

/// What a `fetch_many` result tells the observation: rows, or the first error.
fn outcome(items: &[Item]) -> Result<u64, &sqlx::Error> {
    let mut rows = 0;
    for i in items {
        match i {
            Ok(Either::Right(_)) => rows += 1,
            Ok(Either::Left(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(rows)
}

/// Observes a `fetch_many` stream on a connection the caller holds: rows are counted as they
/// pass, the first error finishes the observation, and so does the stream's end or drop (a
/// `fetch_one` drops it after the first row).
fn observed_stream<'e>(
    db: Database,
    sql: SqlStr,
    args: usize,
    inner: BoxStream<'e, Item>,
) -> BoxStream<'e, Item> {
    struct Watch {
        db: Database,
        sql: SqlStr,
        args: usize,
        open: Option<Observation>,
        rows: u64,
    }
    impl Watch {
        fn see(&mut self, item: &Item) {
            match item {
                Ok(Either::Right(_)) => self.rows += 1,
                Ok(Either::Left(_)) => {}
                Err(e) => self.finish(Err(e)),
            }
        }
        fn finish(&mut self, result: Result<u64, &sqlx::Error>) {
            if let Some(o) = self.open.take() {
                let ctx = ctx_of(&self.db, self.args);
                o.finish(&ctx, SqlText::Borrowed(self.sql.as_str()), result);
            }
        }
    }
    impl Drop for Watch {
        fn drop(&mut self) {
            self.finish(Ok(self.rows));
        }
    }
    let open = Some(Observation::start(&ctx_of(&db, args), sql.as_str()));
    let mut watch = Watch {
        sql,
        args,
        open,
        rows: 0,
        db,
    };
    inner
        .map(move |item| {
            watch.see(&item);
            item
        })
        .boxed()
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
/// retry; then the failure goes back to the caller as it was. Behind a transaction pooler each
/// attempt is a transaction of its own ([`PoolShared::get_for_statement`]).
///
/// [`PoolShared::get_for_statement`]: super::pool::PoolShared::get_for_statement
///
/// Each attempt runs under the connection's watch ([`ConnWatch`](super::pool::ConnWatch)), and
/// the whole call within the handle's statement deadline.
async fn retrying<T, X, F>(db: &Database, sql: &str, mut run: F) -> Result<T, X>
where
    X: Failure,
    F: for<'a> FnMut(&'a mut sqlx::PgConnection) -> BoxFuture<'a, Attempt<T, X>>,
{
    let deadline = Deadline::starting_now(db.deadline);
    let mut pool = &db.inner.pool;
    let mut tries = 0;
    loop {
        tries += 1;
        let mut obj = db
            .statement_checkout(&mut pool, deadline.as_ref(), sql)
            .await
            .map_err(|e| X::from(e.into_sqlx()))?;
        let PooledConn { conn, watch, .. } = &mut *obj;
        let attempt = watch.run_with(deadline.as_ref(), run(conn), |e| {
            Attempt::Failed(X::from(e))
        });
        match attempt.await {
            Attempt::Done(v) => {
                // Not retried when it fails: whether a failed COMMIT took effect is not known.
                pool.end_statement(&mut obj, true).await.map_err(X::from)?;
                return Ok(v);
            }
            Attempt::Failed(x) => {
                record_cut(&ctx_of(db, 0), SqlText::Borrowed(sql), x.error());
                match db.rerun_on(pool, &mut obj, x.error(), tries, sql).await {
                    Some(next) => pool = next,
                    None => return Err(x),
                }
            }
            Attempt::Partial(v, lost) => {
                let _ = pool.end_statement(&mut obj, false).await;
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
            let items = retrying(self, replay.sql.as_str(), |conn| {
                let q = replay.clone();
                let db = self.clone();
                Box::pin(async move {
                    let ctx = q.ctx(&db);
                    let sql = q.sql.clone();
                    let o = Observation::start(&ctx, sql.as_str());
                    let fetch = conn.fetch_many(q).collect().instrument(o.span().clone());
                    let mut items: Vec<Item> = fetch.await;
                    o.finish(&ctx, SqlText::Borrowed(sql.as_str()), outcome(&items));
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
            retrying(self, replay.sql.as_str(), |conn| {
                let q = replay.clone();
                let db = self.clone();
                Box::pin(async move {
                    let (sql, args) = (q.sql.clone(), q.arg_count());
                    observed_optional(&db, &sql, args, conn.fetch_optional(q))
                        .await
                        .into()
                })
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
            retrying(self, sql.as_str(), |conn| {
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
            retrying(self, sql.as_str(), |conn| {
                let sql = sql.clone();
                Box::pin(async move { conn.describe(sql).await.into() })
            })
            .await
        })
    }
}

/// Ends the transaction of its own that a statement on an acquired connection ran in behind a
/// transaction pooler (see [`PoolShared::get_for_statement`]): commit after success, roll back
/// after failure.
///
/// [`PoolShared::get_for_statement`]: super::pool::PoolShared::get_for_statement
async fn end_own(
    db: &Database,
    conn: &mut sqlx::PgConnection,
    ok: bool,
) -> Result<(), sqlx::Error> {
    if ok {
        db.inner.pool.end_on(conn, true).await
    } else {
        let _ = db.inner.pool.end_on(conn, false).await;
        Ok(())
    }
}

/// Runs `statement` (of `sql`, on a held connection) under its connection's `watch`, and
/// records it when the watch cuts it short.
async fn watched<T>(
    db: &Database,
    watch: &ConnWatch,
    deadline: Option<&Deadline>,
    sql: &str,
    statement: impl Future<Output = Result<T, sqlx::Error>>,
    map: ErrorMap,
) -> Result<T, sqlx::Error> {
    let r = watch.run(deadline, statement).await;
    r.map_err(|e| {
        record_cut(&ctx_of(db, 0), SqlText::Borrowed(sql), &e);
        map(sql, e)
    })
}

/// How a held connection's executor reports a statement's failure.
type ErrorMap = fn(&str, sqlx::Error) -> sqlx::Error;

/// On an acquired connection: as the driver reported it.
fn as_reported(_: &str, e: sqlx::Error) -> sqlx::Error {
    e
}

/// On `&mut Transaction`: what the transaction's own methods return, inside the sqlx error
/// ([`Error::from`] recovers it): a lost connection is [`Error::TransactionLost`] (the server
/// rolled the transaction back), a deadline [`Error::Timeout`].
fn in_transaction(sql: &str, e: sqlx::Error) -> sqlx::Error {
    if Cut::of(&e).is_some_and(Cut::is_deadline) {
        return Error::statement(sql, e, true).into_sqlx();
    }
    if !is_connection_lost(&e) {
        return e;
    }
    let lost = TransactionLost::new(QueryError::new(sql, e), false);
    Error::TransactionLost(Box::new(lost)).into_sqlx()
}

/// `&mut Transaction` and `&mut PoolConnection` as sqlx executors: the connection's own, after
/// the schema check of [`Replay::take`], under the connection's watch with the handle's
/// deadline. No retry: a transaction's statements must not be run again, and what runs on an
/// acquired connection is the caller's. `$wraps` says whether each statement needs a
/// transaction of its own (an acquired connection behind a transaction pooler).
macro_rules! checked_connection_executor {
    ($ty:ty, |$this:ident| $db:expr, $pooled:expr, $wraps:expr, $map:expr) => {
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
                let wraps: bool = $wraps;
                let db: Database = ($db).clone();
                let q = match Replay::take(&db, query) {
                    Ok(q) => q,
                    Err(e) => return futures_util::stream::once(async { Err(e) }).boxed(),
                };
                let (sql, args) = (q.sql.clone(), q.arg_count());
                let deadline = Deadline::starting_now(db.deadline);
                let pooled: &mut PooledConn = $pooled;
                let watch = pooled.watch.clone();
                let conn = &mut pooled.conn;
                let map: ErrorMap = $map;
                if !wraps {
                    let label = sql.clone();
                    let rows = watched_stream(watch, deadline, conn.fetch_many(q))
                        .map(move |item| item.map_err(|e| map(label.as_str(), e)));
                    return observed_stream(db, sql, args, rows.boxed());
                }
                let label = sql.clone();
                let fut = async move {
                    db.inner.pool.begin_on(&mut *conn).await?;
                    let items: Vec<Item> =
                        observed_stream(db.clone(), sql, args, conn.fetch_many(q))
                            .collect()
                            .await;
                    end_own(&db, conn, items.iter().all(Result::is_ok)).await?;
                    Ok::<_, sqlx::Error>(futures_util::stream::iter(items))
                };
                let fut = async move {
                    watch
                        .run(deadline.as_ref(), fut)
                        .await
                        .map_err(|e| map(label.as_str(), e))
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
                let $this = self;
                let wraps: bool = $wraps;
                let db: Database = ($db).clone();
                let q = match Replay::take(&db, query) {
                    Ok(q) => q,
                    Err(e) => return Box::pin(async { Err(e) }),
                };
                let (sql, args) = (q.sql.clone(), q.arg_count());
                let deadline = Deadline::starting_now(db.deadline);
                let pooled: &mut PooledConn = $pooled;
                let watch = pooled.watch.clone();
                let conn = &mut pooled.conn;
                Box::pin(async move {
                    let run = async {
                        if !wraps {
                            return observed_optional(&db, &sql, args, conn.fetch_optional(q))
                                .await;
                        }
                        db.inner.pool.begin_on(&mut *conn).await?;
                        let r = observed_optional(&db, &sql, args, conn.fetch_optional(q)).await;
                        end_own(&db, conn, r.is_ok()).await?;
                        r
                    };
                    watched(&db, &watch, deadline.as_ref(), sql.as_str(), run, $map).await
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
                let $this = self;
                let wraps: bool = $wraps;
                let db: Database = ($db).clone();
                let sql = match checked_sql(&db, sql) {
                    Ok(sql) => sql,
                    Err(e) => return Box::pin(async { Err(e) }),
                };
                let label = sql.clone();
                let deadline = Deadline::starting_now(db.deadline);
                let pooled: &mut PooledConn = $pooled;
                let watch = pooled.watch.clone();
                let conn = &mut pooled.conn;
                Box::pin(async move {
                    let run = async {
                        if !wraps {
                            return conn.prepare_with(sql, parameters).await;
                        }
                        db.inner.pool.begin_on(&mut *conn).await?;
                        let r = conn.prepare_with(sql, parameters).await;
                        end_own(&db, conn, r.is_ok()).await?;
                        r
                    };
                    watched(&db, &watch, deadline.as_ref(), label.as_str(), run, $map).await
                })
            }

            fn describe<'e>(
                self,
                sql: SqlStr,
            ) -> BoxFuture<'e, Result<sqlx_core::describe::Describe<Postgres>, sqlx::Error>>
            where
                'c: 'e,
            {
                let $this = self;
                let wraps: bool = $wraps;
                let db: Database = ($db).clone();
                let sql = match checked_sql(&db, sql) {
                    Ok(sql) => sql,
                    Err(e) => return Box::pin(async { Err(e) }),
                };
                let label = sql.clone();
                let deadline = Deadline::starting_now(db.deadline);
                let pooled: &mut PooledConn = $pooled;
                let watch = pooled.watch.clone();
                let conn = &mut pooled.conn;
                Box::pin(async move {
                    let run = async {
                        if !wraps {
                            return conn.describe(sql).await;
                        }
                        db.inner.pool.begin_on(&mut *conn).await?;
                        let r = conn.describe(sql).await;
                        end_own(&db, conn, r.is_ok()).await?;
                        r
                    };
                    watched(&db, &watch, deadline.as_ref(), label.as_str(), run, $map).await
                })
            }
        }
    };
}

checked_connection_executor!(
    super::transaction::Transaction<'_>,
    |tx| &tx.db,
    tx.pooled(),
    false,
    in_transaction
);
checked_connection_executor!(
    super::pool::PoolConnection,
    |c| &c.db,
    &mut c.obj,
    c.db.inner.pool.wraps_statements(),
    as_reported
);

//! What an operator sees of each statement: a `tracing` span in OpenTelemetry's database
//! conventions, the metrics, the in-process statistics and the slow-query warning. Every
//! statement pgdbm runs for the caller comes through [`observe`] or an [`Observation`].

pub(crate) mod metrics;
pub(crate) mod operation;
pub(crate) mod stats;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::Span;
use tracing::field::Empty;

use super::config::DatabaseConfig;
use super::error::Cut;
use metrics::PoolMetrics;
use operation::Operation;
use stats::{QueryRecord, StatsStore};

/// What one pool records; shared by every handle on the pool.
pub(crate) struct Observer {
    pub(crate) metrics: Option<PoolMetrics>,
    pub(crate) stats: Option<StatsStore>,
    database: String,
    address: String,
    port: u16,
}

impl Observer {
    pub(crate) fn new(config: &DatabaseConfig) -> Observer {
        let (address, port, database, _) = config.endpoint();
        let o = &config.observe;
        let metrics = o
            .metrics
            .then(|| PoolMetrics::register(o.pool_name.as_deref().unwrap_or(&database)));
        let stats = o
            .query_stats
            .then(|| StatsStore::new(o.query_history, config.slow_query_threshold));
        Observer {
            metrics,
            stats,
            database,
            address,
            port,
        }
    }
}

/// Where a statement runs and what to record about it.
#[derive(Clone)]
pub(crate) struct QueryCtx<'a> {
    pub(crate) obs: &'a Observer,
    pub(crate) schema: Option<&'a str>,
    pub(crate) slow: Option<Duration>,
    /// The bound values' types, kept only when statistics are on.
    pub(crate) args: Option<Arc<[String]>>,
    /// Whether the statement may be a named, cached prepared statement: not behind a
    /// transaction pooler, where the next transaction may run on a server that lacks it.
    pub(crate) persistent: bool,
}

/// OpenTelemetry's `db.namespace` for PostgreSQL: the schema qualified by the database.
struct Namespace<'a>(&'a str, Option<&'a str>);

impl std::fmt::Display for Namespace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1.unwrap_or("public"))
    }
}

/// A statement being observed: started when it is sent, finished with its result.
pub(crate) struct Observation {
    span: Span,
    op: Operation,
    started: Instant,
}

impl Observation {
    pub(crate) fn start(ctx: &QueryCtx<'_>, sql: &str) -> Observation {
        let op = Operation::of(sql);
        let ns = Namespace(&ctx.obs.database, ctx.schema);
        // Field names are OpenTelemetry's (tracing-opentelemetry maps `otel.*` to the span's
        // name, kind and status), with the pre-1.26 `db.system`/`db.operation`/`db.statement`
        // beside the current names for backends that still read those.
        let span = tracing::debug_span!(
            target: "pgdbm_core::query",
            "pgdbm.query",
            otel.name = %format_args!("{op} {ns}"),
            otel.kind = "client",
            otel.status_code = Empty,
            db.system = "postgresql",
            db.system.name = "postgresql",
            db.namespace = %ns,
            db.operation = op.as_str(),
            db.operation.name = op.as_str(),
            db.statement = sql,
            db.query.text = sql,
            server.address = ctx.obs.address.as_str(),
            server.port = ctx.obs.port,
            db.response.returned_rows = Empty,
            db.response.status_code = Empty,
            error.type = Empty,
        );
        Observation {
            span,
            op,
            started: Instant::now(),
        }
    }

    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Records the outcome: span fields, metrics, statistics, and the slow-query warning.
    pub(crate) fn finish(
        self,
        ctx: &QueryCtx<'_>,
        sql: SqlText<'_>,
        result: Result<u64, &sqlx::Error>,
    ) {
        let elapsed = self.started.elapsed();
        if !self.span.is_disabled() {
            match result {
                Ok(rows) => {
                    self.span.record("db.response.returned_rows", rows);
                }
                Err(e) => {
                    self.span.record("otel.status_code", "ERROR");
                    // A low-cardinality class, as OpenTelemetry asks: the metrics' error label.
                    self.span
                        .record("error.type", metrics::ErrorKind::of(e).as_str());
                    if let sqlx::Error::Database(db) = e
                        && let Some(code) = db.code()
                    {
                        self.span.record("db.response.status_code", &*code);
                    }
                }
            }
        }
        if let Some(m) = &ctx.obs.metrics {
            m.query(self.op, elapsed.as_secs_f64(), result.err());
        }
        if let Some(s) = &ctx.obs.stats {
            s.record(QueryRecord {
                sql: sql.shared(),
                args: ctx.args.clone().unwrap_or_else(|| Arc::from(Vec::new())),
                operation: self.op,
                duration: elapsed,
                rows: result.ok(),
                error: result.err().map(|e| e.to_string()),
                at: SystemTime::now(),
            });
        }
        if let Some(limit) = ctx.slow
            && elapsed > limit
        {
            let _in = self.span.enter();
            tracing::warn!(
                elapsed_ms = elapsed.as_millis() as u64,
                threshold_ms = limit.as_millis() as u64,
                db.schema = ctx.schema.unwrap_or(""),
                db.statement = %prefix(sql.text(), 300),
                "pgdbm: slow query"
            );
        }
    }
}

/// A statement's text, shared when the caller already holds it in an `Arc`.
#[derive(Clone, Copy)]
pub(crate) enum SqlText<'a> {
    Shared(&'a Arc<str>),
    Borrowed(&'a str),
}

impl SqlText<'_> {
    fn text(&self) -> &str {
        match self {
            SqlText::Shared(s) => s,
            SqlText::Borrowed(s) => s,
        }
    }

    fn shared(&self) -> Arc<str> {
        match self {
            SqlText::Shared(s) => Arc::clone(s),
            SqlText::Borrowed(s) => Arc::from(*s),
        }
    }
}

/// Records a statement that pgdbm cut short with `e` (the liveness check or its deadline): its
/// future was dropped before the driver finished it, so [`observe`] never saw its end. A cut
/// before anything was sent is no statement, and is not recorded.
pub(crate) fn record_cut(ctx: &QueryCtx<'_>, sql: SqlText<'_>, e: &sqlx::Error) {
    let Some(cut) = Cut::of(e).filter(|c| c.sent) else {
        return;
    };
    let mut o = Observation::start(ctx, sql.text());
    o.started = Instant::now().checked_sub(cut.waited).unwrap_or(o.started);
    o.finish(ctx, sql, Err(e));
}

/// Runs `fut` (which yields the number of rows with its value) as one observed statement.
pub(crate) async fn observe<T, F>(
    ctx: &QueryCtx<'_>,
    sql: SqlText<'_>,
    fut: F,
) -> Result<T, sqlx::Error>
where
    F: Future<Output = Result<(u64, T), sqlx::Error>>,
{
    use tracing::Instrument;
    let o = Observation::start(ctx, sql.text());
    let result = fut.instrument(o.span().clone()).await;
    o.finish(ctx, sql, result.as_ref().map(|(n, _)| *n));
    result.map(|(_, t)| t)
}

/// The first `max` bytes of `text`, cut back to a character boundary.
pub(crate) fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

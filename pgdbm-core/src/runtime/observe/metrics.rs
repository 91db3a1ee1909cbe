//! The pool's and the queries' metrics, through the `metrics` facade: the service installs the
//! recorder it wants (Prometheus, OpenTelemetry, statsd…), pgdbm only records.
//!
//! Handles are registered once per pool, for every label combination, when the pool opens: the
//! hot path then only touches a handle, with no key hashing or allocation per query. So the
//! recorder must be installed before `Database::connect` (as the exporters' docs do it, first
//! thing in `main`); a pool opened earlier records nothing.

use std::sync::Once;

use metrics::{Counter, Gauge, Histogram, SharedString, Unit};

use super::operation::Operation;
use crate::runtime::error::{Cut, is_connection_lost};
use crate::runtime::pool::PoolStats;

/// The names pgdbm records under, for dashboards and alerts. Every series has the label `pool`
/// (the config's [`pool_name`](crate::DatabaseConfig::pool_name), by default the database name);
/// none is labelled with SQL text or a schema, so the number of series stays bounded with any
/// number of statements and tenants.
pub mod metric_names {
    /// Gauge: connections open now.
    pub const POOL_SIZE: &str = "pgdbm_pool_size";
    /// Gauge: open connections not in use.
    pub const POOL_IDLE: &str = "pgdbm_pool_idle";
    /// Gauge: connections handed out.
    pub const POOL_IN_USE: &str = "pgdbm_pool_in_use";
    /// Gauge: callers waiting for a connection.
    pub const POOL_WAITING: &str = "pgdbm_pool_waiting";
    /// Gauge: the configured `max_connections`.
    pub const POOL_MAX_SIZE: &str = "pgdbm_pool_max_size";
    /// Histogram (seconds): how long each checkout waited for a connection.
    pub const POOL_ACQUIRE_WAIT: &str = "pgdbm_pool_acquire_wait_seconds";
    /// Counter: checkouts that gave up after `acquire_timeout`.
    pub const POOL_ACQUIRE_TIMEOUTS: &str = "pgdbm_pool_acquire_timeouts_total";
    /// Counter: connections opened.
    pub const CONNECTIONS_OPENED: &str = "pgdbm_pool_connections_opened_total";
    /// Counter: connections closed, for any reason (idle, age, broken, pool closed).
    pub const CONNECTIONS_CLOSED: &str = "pgdbm_pool_connections_closed_total";
    /// Counter: connections dropped because they were found broken (lost by the server, failed
    /// a ping).
    pub const CONNECTIONS_BROKEN: &str = "pgdbm_pool_connections_broken_total";
    /// Histogram (seconds): statement duration, labelled `operation` (`SELECT`, `INSERT`,
    /// `UPDATE`, `DELETE`, `MERGE`, `COPY`, `CALL`, `DDL`, `OTHER`) and `outcome` (`ok`,
    /// `error`).
    pub const QUERY_DURATION: &str = "pgdbm_query_duration_seconds";
    /// Counter: failed statements, labelled `operation` and `error` (`database`, `connection`,
    /// `decode`, `other`).
    pub const QUERY_ERRORS: &str = "pgdbm_query_errors_total";
    /// Counter: migration runs, labelled `module` and `outcome` (`ok`, `error`).
    pub const MIGRATION_RUNS: &str = "pgdbm_migration_runs_total";
    /// Counter: migration files applied, labelled `module`.
    pub const MIGRATIONS_APPLIED: &str = "pgdbm_migrations_applied_total";
    /// Histogram (seconds): duration of a migration run, labelled `module`.
    pub const MIGRATION_DURATION: &str = "pgdbm_migration_duration_seconds";
    /// Counter: notifications received by listeners ([`Listener`](crate::Listener)).
    pub const LISTENER_NOTIFICATIONS: &str = "pgdbm_listener_notifications_total";
    /// Counter: listener sessions re-established after a loss (each one an
    /// [`Event::Reconnected`](crate::Event::Reconnected)).
    pub const LISTENER_RECONNECTS: &str = "pgdbm_listener_reconnects_total";
    /// Histogram (seconds): how long each event waited in a listener before the application
    /// took it.
    pub const LISTENER_LAG: &str = "pgdbm_listener_lag_seconds";
}

use metric_names as n;

/// Why a statement failed, as the `error` label: a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The server answered with an error (any SQLSTATE).
    Database,
    /// The connection broke (I/O, TLS, protocol, session ended, or the liveness check found
    /// its server silent).
    Connection,
    /// The statement deadline passed.
    Timeout,
    /// A row or value did not decode into the Rust type.
    Decode,
    Other,
}

impl ErrorKind {
    const ALL: [ErrorKind; 5] = [
        ErrorKind::Database,
        ErrorKind::Connection,
        ErrorKind::Timeout,
        ErrorKind::Decode,
        ErrorKind::Other,
    ];

    pub(crate) fn of(e: &sqlx::Error) -> ErrorKind {
        match e {
            _ if Cut::of(e).is_some_and(Cut::is_deadline) => ErrorKind::Timeout,
            _ if is_connection_lost(e) => ErrorKind::Connection,
            sqlx::Error::Database(_) => ErrorKind::Database,
            sqlx::Error::Decode(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. } => ErrorKind::Decode,
            _ => ErrorKind::Other,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Database => "database",
            ErrorKind::Connection => "connection",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Decode => "decode",
            ErrorKind::Other => "other",
        }
    }
}

/// A pool's registered handles.
pub(crate) struct PoolMetrics {
    size: Gauge,
    idle: Gauge,
    in_use: Gauge,
    waiting: Gauge,
    max_size: Gauge,
    pub(crate) acquire_wait: Histogram,
    pub(crate) acquire_timeouts: Counter,
    pub(crate) connections: ConnMetrics,
    /// `[operation][ok, error]`.
    durations: Vec<[Histogram; 2]>,
    /// `[operation][error kind]`.
    errors: Vec<[Counter; 5]>,
}

/// What each connection records when it opens and closes.
#[derive(Clone)]
pub(crate) struct ConnMetrics {
    pub(crate) opened: Counter,
    pub(crate) closed: Counter,
    pub(crate) broken: Counter,
}

impl PoolMetrics {
    pub(crate) fn register(pool: &str) -> PoolMetrics {
        describe_once();
        let pool = SharedString::from(pool.to_string());
        let label = || [("pool", pool.clone())];
        let durations = Operation::ALL
            .iter()
            .map(|op| {
                ["ok", "error"].map(|outcome| {
                    metrics::histogram!(n::QUERY_DURATION, "pool" => pool.clone(), "operation" => op.as_str(), "outcome" => outcome)
                })
            })
            .collect();
        let errors = Operation::ALL
            .iter()
            .map(|op| {
                ErrorKind::ALL.map(|kind| {
                    metrics::counter!(n::QUERY_ERRORS, "pool" => pool.clone(), "operation" => op.as_str(), "error" => kind.as_str())
                })
            })
            .collect();
        PoolMetrics {
            size: metrics::gauge!(n::POOL_SIZE, &label()),
            idle: metrics::gauge!(n::POOL_IDLE, &label()),
            in_use: metrics::gauge!(n::POOL_IN_USE, &label()),
            waiting: metrics::gauge!(n::POOL_WAITING, &label()),
            max_size: metrics::gauge!(n::POOL_MAX_SIZE, &label()),
            acquire_wait: metrics::histogram!(n::POOL_ACQUIRE_WAIT, &label()),
            acquire_timeouts: metrics::counter!(n::POOL_ACQUIRE_TIMEOUTS, &label()),
            connections: ConnMetrics {
                opened: metrics::counter!(n::CONNECTIONS_OPENED, &label()),
                closed: metrics::counter!(n::CONNECTIONS_CLOSED, &label()),
                broken: metrics::counter!(n::CONNECTIONS_BROKEN, &label()),
            },
            durations,
            errors,
        }
    }

    pub(crate) fn set_pool(&self, s: &PoolStats) {
        self.size.set(s.size as f64);
        self.idle.set(s.idle as f64);
        self.in_use.set(s.in_use as f64);
        self.waiting.set(s.waiting as f64);
        self.max_size.set(s.max_size as f64);
    }

    pub(crate) fn query(&self, op: Operation, seconds: f64, error: Option<&sqlx::Error>) {
        let by_op = &self.durations[op.index()];
        match error {
            None => by_op[0].record(seconds),
            Some(e) => {
                by_op[1].record(seconds);
                let kind = ErrorKind::of(e);
                self.errors[op.index()][kind as usize].increment(1);
            }
        }
    }
}

/// Records one migration run of `module`.
pub(crate) fn migration_run(module: &str, applied: usize, seconds: f64, ok: bool) {
    describe_once();
    let module = SharedString::from(module.to_string());
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!(n::MIGRATION_RUNS, "module" => module.clone(), "outcome" => outcome)
        .increment(1);
    metrics::counter!(n::MIGRATIONS_APPLIED, "module" => module.clone()).increment(applied as u64);
    metrics::histogram!(n::MIGRATION_DURATION, "module" => module).record(seconds);
}

fn describe_once() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        let c = Unit::Count;
        metrics::describe_gauge!(n::POOL_SIZE, c, "Connections open now");
        metrics::describe_gauge!(n::POOL_IDLE, c, "Open connections not in use");
        metrics::describe_gauge!(n::POOL_IN_USE, c, "Connections handed out");
        metrics::describe_gauge!(n::POOL_WAITING, c, "Callers waiting for a connection");
        metrics::describe_gauge!(n::POOL_MAX_SIZE, c, "Configured max_connections");
        metrics::describe_histogram!(
            n::POOL_ACQUIRE_WAIT,
            Unit::Seconds,
            "Time each checkout waited for a connection"
        );
        metrics::describe_counter!(
            n::POOL_ACQUIRE_TIMEOUTS,
            c,
            "Checkouts that gave up after acquire_timeout"
        );
        metrics::describe_counter!(n::CONNECTIONS_OPENED, c, "Connections opened");
        metrics::describe_counter!(n::CONNECTIONS_CLOSED, c, "Connections closed");
        metrics::describe_counter!(
            n::CONNECTIONS_BROKEN,
            c,
            "Connections dropped because they were found broken"
        );
        metrics::describe_histogram!(
            n::QUERY_DURATION,
            Unit::Seconds,
            "Statement duration by operation and outcome"
        );
        metrics::describe_counter!(
            n::QUERY_ERRORS,
            c,
            "Failed statements by operation and error kind"
        );
        metrics::describe_counter!(n::MIGRATION_RUNS, c, "Migration runs by module and outcome");
        metrics::describe_counter!(n::MIGRATIONS_APPLIED, c, "Migration files applied");
        metrics::describe_histogram!(
            n::MIGRATION_DURATION,
            Unit::Seconds,
            "Duration of a migration run"
        );
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::ErrorKind;
    use crate::runtime::error::{Cut, CutReason};

    #[test]
    fn cuts_are_labelled_timeout_or_connection() {
        let cut = |why| {
            Cut {
                why,
                waited: Duration::from_secs(1),
                sent: true,
            }
            .into_sqlx()
        };
        let deadline = cut(CutReason::Deadline(Duration::from_secs(1)));
        assert_eq!(ErrorKind::of(&deadline).as_str(), "timeout");
        let silent = cut(CutReason::Unreachable("silent".into()));
        assert_eq!(ErrorKind::of(&silent).as_str(), "connection");
        assert_eq!(ErrorKind::of(&sqlx::Error::RowNotFound).as_str(), "other");
    }
}

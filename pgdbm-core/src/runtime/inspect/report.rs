//! [`Database::health_check`]: a diagnostic report in one query (server, locks, long-running
//! statements, replication) plus the pool as the client sees it.

use std::time::{Duration, Instant};

use super::{from_secs, ms_opt};
use crate::runtime::database::Database;
use crate::runtime::error::{Error, Result};
use crate::runtime::health::HealthStatus;
use crate::runtime::listen::ListenerStatus;
use crate::runtime::pool::PoolStats;

/// Statements not idle for longer than this count as long-running in the report.
pub(crate) const LONG_RUNNING: Duration = Duration::from_secs(60);
/// Replication lag above this is a warning.
pub(crate) const LAG_WARNING: Duration = Duration::from_secs(10);
/// Pool use (in use / max size) at or above this is a warning.
pub(crate) const POOL_WARNING: f64 = 0.9;

/// One standby streaming from this server (a row of `pg_stat_replication`). Without
/// superuser or `pg_read_all_stats`, PostgreSQL hides all but the name.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ReplicaLag {
    /// The standby's `application_name` (its `cluster_name`, or `walreceiver`).
    pub application_name: Option<String>,
    /// The standby's address (`None` over a Unix socket).
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, `startup`, `backup` or `stopping`.
    pub state: Option<String>,
    /// How long until a commit here became visible there (`replay_lag`; `None` when the
    /// standby has been idle, as PostgreSQL resets it). JSON: `replay_lag_ms`.
    #[serde(rename = "replay_lag_ms", serialize_with = "ms_opt")]
    pub replay_lag: Option<Duration>,
    /// WAL bytes written here and not yet replayed there.
    pub bytes_behind: Option<i64>,
}

/// What [`Database::health_check`] found. Durations serialise as milliseconds, in fields whose
/// names end in `_ms`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// `Healthy` when there are no warnings, else `Degraded`; `Reconnecting` or `Unhealthy`
    /// when the server could not be asked.
    pub status: HealthStatus,
    /// What needs attention, one sentence each (e.g. `2 queries are blocked by locks`).
    pub warnings: Vec<String>,
    /// `version()`: `PostgreSQL 15.6 on x86_64-pc-linux-gnu, compiled by …`.
    pub server_version: Option<String>,
    /// `server_version_num`, e.g. `150006`.
    pub server_version_num: Option<i32>,
    /// `pg_is_in_recovery()`: `true` on a standby.
    pub in_recovery: Option<bool>,
    /// Round trip of the report's query, connection checkout included. JSON: `latency_ms`.
    #[serde(rename = "latency_ms", serialize_with = "ms_opt")]
    pub latency: Option<Duration>,
    /// While `Reconnecting`: how long the server has been unreachable. JSON: `outage_ms`.
    #[serde(rename = "outage_ms", serialize_with = "ms_opt")]
    pub outage: Option<Duration>,
    /// The pool just before the check.
    pub pool: PoolStats,
    /// `pool.in_use / pool.max_size`, from 0 to 1.
    pub pool_saturation: f64,
    /// Backends of the current database waiting for a lock another session holds.
    pub blocked_queries: u64,
    /// Statements of the current database not idle for more than 60 s (this check's own
    /// backend excluded).
    pub long_running_queries: u64,
    /// Standbys streaming from this server (empty when there are none).
    pub replicas: Vec<ReplicaLag>,
    /// On a standby, how far its replay is behind the primary (0 when it has replayed all it
    /// received); `None` on a primary. JSON: `replay_delay_ms`.
    #[serde(rename = "replay_delay_ms", serialize_with = "ms_opt")]
    pub replay_delay: Option<Duration>,
    /// The [`Listener`](crate::Listener)s made from this pool's handles: connected or
    /// reconnecting (and for how long), their channels and counters. A reconnecting one is a
    /// warning. Empty when the server could not be asked.
    pub listeners: Vec<ListenerStatus>,
}

impl HealthReport {
    /// A report of a check that could not ask the server.
    fn unanswered(
        status: HealthStatus,
        why: String,
        pool: PoolStats,
        outage: Option<Duration>,
    ) -> HealthReport {
        HealthReport {
            status,
            warnings: vec![why],
            server_version: None,
            server_version_num: None,
            in_recovery: None,
            latency: None,
            outage,
            pool_saturation: saturation(&pool),
            pool,
            blocked_queries: 0,
            long_running_queries: 0,
            replicas: Vec::new(),
            replay_delay: None,
            listeners: Vec::new(),
        }
    }

    /// `true` when the status is [`HealthStatus::Healthy`].
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

// pg_current_wal_lsn() fails during recovery and pg_last_wal_replay_lsn() means nothing outside
// it: each is only reached in its CASE branch (both are volatile, so never folded ahead).
const REPORT: &str = "SELECT version(),
       current_setting('server_version_num')::int4,
       pg_is_in_recovery(),
       a.blocked,
       a.long_running,
       r.replicas,
       CASE WHEN pg_is_in_recovery() THEN
           CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
           END::float8
       END
FROM (
    SELECT count(*) FILTER (WHERE cardinality(pg_blocking_pids(pid)) > 0) AS blocked,
           count(*) FILTER (WHERE state <> 'idle' AND pid <> pg_backend_pid()
                            AND now() - query_start > make_interval(secs => $1)) AS long_running
    FROM pg_stat_activity
    WHERE datname = current_database()
) AS a,
(
    SELECT coalesce(json_agg(json_build_object(
               'application_name', application_name,
               'client_addr', client_addr::text,
               'state', state,
               'replay_lag', extract(epoch FROM replay_lag)::float8,
               'bytes_behind', pg_wal_lsn_diff(
                   CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                        ELSE pg_current_wal_lsn() END,
                   replay_lsn)::int8
           ) ORDER BY application_name, pid), '[]'::json) AS replicas
    FROM pg_stat_replication
) AS r";

type ReportRow = (String, i32, bool, i64, i64, serde_json::Value, Option<f64>);

/// A replica as the report's query writes it.
#[derive(serde::Deserialize)]
struct RawReplica {
    application_name: Option<String>,
    client_addr: Option<String>,
    state: Option<String>,
    replay_lag: Option<f64>,
    bytes_behind: Option<i64>,
}

impl Database {
    /// A diagnostic report of the server and the pool: one query for the server's version and
    /// role, the backends of the current database that wait for locks or have run for more than
    /// 60 s, the standbys streaming from it with their lag (on a standby: its own replay delay),
    /// plus the round trip of that query and the pool's numbers.
    ///
    /// The status is [`HealthStatus::Degraded`] with one warning per finding: blocked queries,
    /// long-running queries, callers waiting for a pool connection or the pool at 90 % or more
    /// of its maximum, a standby lagging more than 10 s. A server the pool cannot reach is an
    /// `Err`: the pool's own error (a refused connection at once; [`Error::PoolTimeout`] after
    /// waiting up to `acquire_timeout` while the server is down).
    ///
    /// [`health`](Self::health) is the quick readiness probe (never waits through an outage);
    /// this is the look around for an operator or a status page.
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// let report = db.health_check().await?;
    /// if !report.is_healthy() {
    ///     for w in &report.warnings { eprintln!("database: {w}"); }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The pool's checkout errors when it cannot give a connection ([`Error::PoolTimeout`],
    /// [`Error::Connect`], [`Error::PoolClosed`]), and [`Error::Query`] when the server rejects the
    /// report's query. No answer within the check's deadline is a report, not an error.
    pub async fn health_check(&self) -> Result<HealthReport> {
        // Before this check takes a connection of its own.
        let pool = self.pool_stats();
        let shared = &self.inner.pool;
        if let Some(down) = shared.outage.down() {
            return Ok(HealthReport::unanswered(
                HealthStatus::Reconnecting,
                format!(
                    "the server has been unreachable for {:.1?} ({}); the pool is reconnecting",
                    down.since, down.last_error
                ),
                pool,
                Some(down.since),
            ));
        }
        let started = Instant::now();
        let limit = self.health_deadline();
        let bounded = self.with_deadline(Some(limit));
        let check = bounded.fetch_one::<ReportRow, _>(REPORT, (LONG_RUNNING.as_secs_f64(),));
        let row = tokio::select! {
            r = check => match r {
                Ok(row) => row,
                Err(Error::Timeout(_)) => {
                    shared.kick_liveness_check();
                    return Ok(HealthReport::unanswered(
                        HealthStatus::Unhealthy,
                        format!("no answer within {limit:?}; checking whether the server can be reached"),
                        pool,
                        None,
                    ));
                }
                Err(e) => return Err(e),
            },
            () = shared.outage.wait_down() => {
                let down = shared.outage.down();
                return Ok(HealthReport::unanswered(
                    HealthStatus::Reconnecting,
                    format!(
                        "the server has become unreachable ({}); the pool is reconnecting",
                        down.as_ref().map(|d| d.last_error.as_str()).unwrap_or("")
                    ),
                    pool,
                    down.map(|d| d.since),
                ));
            }
        };
        let latency = started.elapsed();
        let (server_version, server_version_num, in_recovery, blocked, long, replicas, delay) = row;
        let replicas: Vec<RawReplica> = serde_json::from_value(replicas).unwrap_or_default();
        let replicas: Vec<ReplicaLag> = replicas
            .into_iter()
            .map(|r| ReplicaLag {
                application_name: r.application_name,
                client_addr: r.client_addr,
                state: r.state,
                replay_lag: r.replay_lag.map(from_secs),
                bytes_behind: r.bytes_behind,
            })
            .collect();
        let pool_saturation = saturation(&pool);
        let mut report = HealthReport {
            status: HealthStatus::Healthy,
            warnings: Vec::new(),
            server_version: Some(server_version),
            server_version_num: Some(server_version_num),
            in_recovery: Some(in_recovery),
            latency: Some(latency),
            outage: None,
            pool,
            pool_saturation,
            blocked_queries: u64::try_from(blocked).unwrap_or(0),
            long_running_queries: u64::try_from(long).unwrap_or(0),
            replicas,
            replay_delay: delay.map(from_secs),
            listeners: shared.listeners.statuses(),
        };
        report.warnings = warnings(&report);
        // What `verify_checked_queries` found: the service runs queries the schema broke.
        report.warnings.extend(shared.verification_warnings());
        if !report.warnings.is_empty() {
            report.status = HealthStatus::Degraded;
        }
        Ok(report)
    }
}

/// `in_use / max_size`, from 0 to 1.
fn saturation(pool: &PoolStats) -> f64 {
    if pool.max_size == 0 {
        0.0
    } else {
        pool.in_use as f64 / pool.max_size as f64
    }
}

/// The warnings a report calls for.
fn warnings(r: &HealthReport) -> Vec<String> {
    let mut w = Vec::new();
    let plural = |n: u64, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    if r.blocked_queries > 0 {
        w.push(format!(
            "{} blocked by locks (see blocking_queries)",
            plural(r.blocked_queries, "query is", "queries are")
        ));
    }
    if r.long_running_queries > 0 {
        w.push(format!(
            "{} run for more than {} s (see long_running_queries)",
            plural(r.long_running_queries, "query has", "queries have"),
            LONG_RUNNING.as_secs()
        ));
    }
    if r.pool.waiting > 0 {
        w.push(format!(
            "{} for a pool connection",
            plural(
                r.pool.waiting as u64,
                "caller is waiting",
                "callers are waiting"
            )
        ));
    }
    if r.pool.max_size > 0 && r.pool_saturation >= POOL_WARNING {
        w.push(format!(
            "pool at {:.0}% of max_connections ({} of {} in use)",
            r.pool_saturation * 100.0,
            r.pool.in_use,
            r.pool.max_size
        ));
    }
    for rep in &r.replicas {
        if let Some(lag) = rep.replay_lag.filter(|l| *l > LAG_WARNING) {
            w.push(format!(
                "replica {} lags {:.0} s",
                rep.application_name.as_deref().unwrap_or("(unnamed)"),
                lag.as_secs_f64()
            ));
        }
    }
    for l in &r.listeners {
        if let Some(since) = l.reconnecting_for {
            w.push(format!(
                "a listener ({}) has been reconnecting for {:.1} s: {}",
                l.channels.join(", "),
                since.as_secs_f64(),
                l.last_error.as_deref().unwrap_or("")
            ));
        }
    }
    if let Some(delay) = r.replay_delay.filter(|d| *d > LAG_WARNING) {
        w.push(format!(
            "this standby replays {:.0} s behind its primary",
            delay.as_secs_f64()
        ));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> HealthReport {
        HealthReport {
            status: HealthStatus::Healthy,
            warnings: Vec::new(),
            server_version: Some("PostgreSQL 15".into()),
            server_version_num: Some(150000),
            in_recovery: Some(false),
            latency: Some(Duration::from_millis(2)),
            outage: None,
            pool: PoolStats {
                size: 2,
                idle: 1,
                in_use: 1,
                waiting: 0,
                max_size: 20,
                min_size: 1,
                timeouts: 0,
                acquired: 0,
            },
            pool_saturation: 0.05,
            blocked_queries: 0,
            long_running_queries: 0,
            replicas: Vec::new(),
            replay_delay: None,
            listeners: Vec::new(),
        }
    }

    #[test]
    fn a_quiet_server_has_no_warnings() {
        assert!(warnings(&report()).is_empty());
    }

    #[test]
    fn each_finding_is_one_warning() {
        let mut r = report();
        r.blocked_queries = 3;
        r.long_running_queries = 1;
        r.pool.in_use = 19;
        r.pool.waiting = 2;
        r.pool_saturation = 0.95;
        r.replicas.push(ReplicaLag {
            application_name: Some("walreceiver".into()),
            client_addr: Some("10.0.0.2".into()),
            state: Some("streaming".into()),
            replay_lag: Some(Duration::from_secs(12)),
            bytes_behind: Some(4096),
        });
        r.replay_delay = Some(Duration::from_secs(30));
        assert_eq!(
            warnings(&r),
            [
                "3 queries are blocked by locks (see blocking_queries)",
                "1 query has run for more than 60 s (see long_running_queries)",
                "2 callers are waiting for a pool connection",
                "pool at 95% of max_connections (19 of 20 in use)",
                "replica walreceiver lags 12 s",
                "this standby replays 30 s behind its primary",
            ]
        );
    }

    #[test]
    fn serialises_durations_as_milliseconds() {
        let v = serde_json::to_value(report()).unwrap();
        assert_eq!(v["status"], "healthy");
        assert_eq!(v["latency_ms"], 2.0);
        assert_eq!(v["replay_delay_ms"], serde_json::Value::Null);
        assert_eq!(v["pool"]["max_size"], 20);
        assert!(v.get("latency").is_none());
    }
}

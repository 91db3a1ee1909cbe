//! `Database::health`: what a readiness probe needs, without waiting through an outage.

use std::time::{Duration, Instant};

use super::database::Database;
use super::pool::PoolStats;

/// The longest a health check waits for `SELECT 1`: a probe must answer quickly even when the
/// pool's `acquire_timeout` is long.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`Database::health`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthStatus {
    /// `SELECT 1` answered.
    Healthy,
    /// The pool lost the server and is reconnecting; checkouts wait (up to `acquire_timeout`)
    /// meanwhile. A readiness probe should answer "not ready".
    Reconnecting,
    /// The check failed for another reason (see [`Health::error`]), or the pool is closed.
    Unhealthy,
}

/// The result of [`Database::health`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Health {
    /// The verdict.
    pub status: HealthStatus,
    /// Round trip of the `SELECT 1`, when it answered.
    pub latency: Option<Duration>,
    /// How long the server has been unreachable, while reconnecting.
    pub outage: Option<Duration>,
    /// The last connect error while reconnecting, or why the check failed.
    pub error: Option<String>,
    /// The pool's statistics at the time of the check.
    pub pool: PoolStats,
}

impl Health {
    /// `true` when the status is [`HealthStatus::Healthy`].
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

impl Database {
    /// Checks the database: `Reconnecting` at once while the pool has lost the server (no
    /// query is sent, so the check never waits through the outage), otherwise a `SELECT 1`
    /// through the pool, bounded by `acquire_timeout` and 5 s.
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database) {
    /// let health = db.health().await;
    /// if !health.is_healthy() {
    ///     eprintln!("database: {:?} ({})", health.status, health.error.unwrap_or_default());
    /// }
    /// # }
    /// ```
    pub async fn health(&self) -> Health {
        let pool = &self.inner.pool;
        let report = |status, latency, outage, error| Health {
            status,
            latency,
            outage,
            error,
            pool: pool.stats(),
        };
        if self.is_closed() {
            let error = Some("the connection pool is closed".to_string());
            return report(HealthStatus::Unhealthy, None, None, error);
        }
        if let Some(down) = pool.outage.down() {
            let error = Some(down.last_error);
            return report(HealthStatus::Reconnecting, None, Some(down.since), error);
        }
        let limit = pool.config.acquire_timeout.min(CHECK_TIMEOUT);
        let started = Instant::now();
        let check = tokio::time::timeout(limit, self.fetch_value::<i32, _>("SELECT 1", ()));
        tokio::select! {
            r = check => match r {
                Ok(Ok(Some(1))) => report(HealthStatus::Healthy, Some(started.elapsed()), None, None),
                Ok(Ok(other)) => {
                    let error = Some(format!("SELECT 1 returned {other:?}"));
                    report(HealthStatus::Unhealthy, None, None, error)
                }
                Ok(Err(e)) => report(HealthStatus::Unhealthy, None, None, Some(e.to_string())),
                Err(_) => {
                    let error = Some(format!("no answer to SELECT 1 within {limit:?}"));
                    report(HealthStatus::Unhealthy, None, None, error)
                }
            },
            () = pool.outage.wait_down() => {
                let down = pool.outage.down();
                let outage = down.as_ref().map(|d| d.since);
                report(HealthStatus::Reconnecting, None, outage, down.map(|d| d.last_error))
            }
        }
    }
}

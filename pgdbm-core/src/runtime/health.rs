//! `Database::health`: what a readiness probe needs, without waiting through an outage.

use std::time::{Duration, Instant};

use super::database::Database;
use super::error::Error;
use super::pool::PoolStats;

/// The longest a health check waits for its answer (checkout included), whatever the sockets
/// do: a readiness probe must answer quickly even when the pool's `acquire_timeout` is long or
/// the server went silent. Also capped by `acquire_timeout` and `liveness_timeout`.
pub(crate) const HEALTH_DEADLINE: Duration = Duration::from_millis(1500);

/// What [`Database::health`] and [`Database::health_check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HealthStatus {
    /// The server answered.
    Healthy,
    /// The server answers, but something needs attention (only from
    /// [`health_check`](Database::health_check), with its warnings).
    Degraded,
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
    /// How long a health check may take: see [`HEALTH_DEADLINE`].
    pub(crate) fn health_deadline(&self) -> Duration {
        let pool = &self.inner.pool;
        HEALTH_DEADLINE
            .min(pool.config.acquire_timeout)
            .min(pool.liveness().check_timeout)
    }

    /// Checks the database: `Reconnecting` at once while the pool has lost the server (no
    /// query is sent, so the check never waits through the outage), otherwise a `SELECT 1`
    /// through the pool within 1.5 s (or `acquire_timeout` / `liveness_timeout` if shorter),
    /// whatever the sockets do. No answer in that time is `Unhealthy`, and has the liveness
    /// check look at the server at once: a silent server is `Reconnecting` from then on.
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
        let limit = self.health_deadline();
        let started = Instant::now();
        let bounded = self.with_deadline(Some(limit));
        let check = bounded.fetch_value::<i32, _>("SELECT 1", ());
        tokio::select! {
            r = check => match r {
                Ok(Some(1)) => report(HealthStatus::Healthy, Some(started.elapsed()), None, None),
                Ok(other) => {
                    let error = Some(format!("SELECT 1 returned {other:?}"));
                    report(HealthStatus::Unhealthy, None, None, error)
                }
                Err(Error::Timeout(_)) => {
                    pool.kick_liveness_check();
                    let error = Some(format!(
                        "no answer to SELECT 1 within {limit:?}; checking whether the server can be reached"
                    ));
                    report(HealthStatus::Unhealthy, None, None, error)
                }
                Err(e) => report(HealthStatus::Unhealthy, None, None, Some(e.to_string())),
            },
            () = pool.outage.wait_down() => {
                let down = pool.outage.down();
                let outage = down.as_ref().map(|d| d.since);
                report(HealthStatus::Reconnecting, None, outage, down.map(|d| d.last_error))
            }
        }
    }
}

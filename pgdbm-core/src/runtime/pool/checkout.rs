//! Checking a connection out: bounded by `acquire_timeout` (and a call's deadline), in turn
//! behind callers that waited through an outage, with a ping or `BEGIN` run on it first when
//! the caller needs one.

use std::sync::atomic::Ordering;
use std::time::Instant;

use deadpool::managed::PoolError;
use sqlx::Connection;
use sqlx::postgres::PgTransactionManager;
use sqlx_core::transaction::TransactionManager;

use super::watch::Deadline;
use super::{PoolObject, PoolShared, connect_error, is_connection_lost};
use crate::runtime::error::{Error, Result, TimeoutError};

/// What a checkout runs on the connection before handing it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prepare {
    Nothing,
    /// A round trip, for connections handed to the caller (`acquire`), whose statements pgdbm
    /// cannot run again.
    Ping,
    /// `BEGIN`, for a transaction.
    Begin,
}

impl Prepare {
    fn sql(self) -> &'static str {
        match self {
            Prepare::Nothing => "",
            Prepare::Ping => "-- ping of a pooled connection",
            Prepare::Begin => "BEGIN",
        }
    }
}

enum Checkout {
    Pool(PoolError<sqlx::Error>),
    Prepare(Prepare, sqlx::Error),
}

impl From<PoolError<sqlx::Error>> for Checkout {
    fn from(e: PoolError<sqlx::Error>) -> Self {
        Checkout::Pool(e)
    }
}

impl PoolShared {
    /// Checks a connection out of the pool, waiting up to `acquire_timeout` for a free slot and,
    /// while the server is unreachable, for it to come back.
    pub(crate) async fn get(&self) -> Result<PoolObject> {
        self.checkout(Prepare::Nothing, None).await
    }

    /// Checks a connection out and runs `prepare` on it (a ping, or `BEGIN`), taking another
    /// connection while that finds the connection dead: both change nothing, so they are safe to
    /// run again. `lane` is a tenant handle's [`lane_key`](super::lane_key).
    pub(crate) async fn get_prepared(
        &self,
        prepare: Prepare,
        lane: Option<u64>,
    ) -> Result<PoolObject> {
        self.checkout(prepare, lane).await
    }

    /// [`get_prepared`](Self::get_prepared) within a call's deadline, if it has one: a
    /// deadline that passes first is [`Error::Timeout`] for `sql`, which was not sent.
    pub(crate) async fn get_within(
        &self,
        prepare: Prepare,
        lane: Option<u64>,
        deadline: Option<&Deadline>,
        sql: &str,
    ) -> Result<PoolObject> {
        let Some(d) = deadline else {
            return self.checkout(prepare, lane).await;
        };
        match tokio::time::timeout_at(d.at.into(), self.checkout(prepare, lane)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(Box::new(TimeoutError::new(
                sql,
                d.limit,
                d.began.elapsed(),
                false,
                false,
            )))),
        }
    }

    /// A checkout that takes its turn behind callers that waited through an outage; `prepare`
    /// is part of the turn, so those callers get their connections in the order they came.
    async fn checkout_in_turn(
        &self,
        prepare: Prepare,
        lane: Option<u64>,
    ) -> Result<PoolObject, Checkout> {
        self.outage
            .in_turn(|| async {
                let mut tries = 0;
                loop {
                    tries += 1;
                    let mut obj = self.pool.get(lane, &self.timeouts).await?;
                    let Err(e) = self.prepare(&mut obj, prepare).await else {
                        return Ok(obj);
                    };
                    let lost = is_connection_lost(&e);
                    if lost {
                        self.lost(&mut obj);
                    }
                    if !lost || tries > self.config.max_connections {
                        return Err(Checkout::Prepare(prepare, e));
                    }
                }
            })
            .await
    }

    /// Runs `prepare` on `obj`, within `liveness_timeout`: a connection that does not answer a
    /// ping or `BEGIN` that soon is treated as lost, and the liveness check looks at its server.
    async fn prepare(&self, obj: &mut PoolObject, prepare: Prepare) -> Result<(), sqlx::Error> {
        let super::PooledConn { conn, watch, .. } = &mut **obj;
        let run = async {
            match prepare {
                Prepare::Nothing => Ok(()),
                Prepare::Ping => conn.ping().await,
                Prepare::Begin => {
                    PgTransactionManager::begin(&mut *conn, self.begin_sql.clone()).await
                }
            }
        };
        if prepare == Prepare::Nothing {
            return Ok(());
        }
        let within = self.liveness().check_timeout;
        match tokio::time::timeout(within, watch.run(None, run)).await {
            Ok(r) => r,
            Err(_) => {
                self.watchdog.kick();
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer to {} within {within:?}", prepare.sql()),
                )))
            }
        }
    }

    pub(super) async fn checkout(&self, prepare: Prepare, lane: Option<u64>) -> Result<PoolObject> {
        let wait = self.config.acquire_timeout;
        let metrics = self.observer.metrics.as_ref();
        let started = metrics.map(|_| Instant::now());
        let r = if prepare == Prepare::Nothing && !self.outage.queueing() {
            let get = self.pool.get(lane, &self.timeouts);
            tokio::time::timeout(wait, get)
                .await
                .map(|r| r.map_err(Checkout::Pool))
        } else {
            // Boxed: this path's future is large, and the hot path above should not carry it.
            tokio::time::timeout(wait, Box::pin(self.checkout_in_turn(prepare, lane))).await
        };
        match r {
            Ok(Ok(obj)) => {
                self.counters.acquired.fetch_add(1, Ordering::Relaxed);
                if let (Some(m), Some(t)) = (metrics, started) {
                    m.acquire_wait.record(t.elapsed().as_secs_f64());
                }
                Ok(obj)
            }
            Ok(Err(Checkout::Pool(PoolError::Closed)))
            | Ok(Err(Checkout::Pool(PoolError::Backend(sqlx::Error::PoolClosed)))) => {
                Err(Error::PoolClosed)
            }
            Ok(Err(Checkout::Pool(PoolError::Backend(e)))) => {
                Err(connect_error(&self.config, 1, e))
            }
            Ok(Err(Checkout::Pool(e))) => Err(Error::config("pool", e.to_string())),
            Ok(Err(Checkout::Prepare(p, e))) => Err(Error::query(p.sql(), e)),
            Err(_) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = metrics {
                    m.acquire_timeouts.increment(1);
                    m.set_pool(&self.stats());
                }
                Err(Error::PoolTimeout {
                    waited: wait,
                    max_size: self.config.max_connections,
                    unreachable: self.outage.down().map(|d| d.last_error),
                })
            }
        }
    }
}

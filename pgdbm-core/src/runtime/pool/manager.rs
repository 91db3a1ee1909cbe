//! deadpool's manager: how a pooled connection is opened (waiting through an outage), checked
//! before reuse, and reopened by the one reconnect loop, which follows a host list.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::connector::{Connector, Opened};
use super::liveness::Watchdog;
use super::watch::ConnWatch;
use crate::runtime::error::redact;
use crate::runtime::observe::metrics::ConnMetrics;
use crate::runtime::outage::{Link, Outage, jittered, unreachable};

/// One deadpool pool of pgdbm's connections (the pool is one or more, see `lanes.rs`).
pub(crate) type DeadPool = managed::Pool<ConnManager>;
/// A connection checked out of it.
pub(crate) type PoolObject = managed::Object<ConnManager>;

/// A sqlx connection as the pool keeps it.
pub(crate) struct PooledConn {
    pub(crate) conn: PgConnection,
    /// Set when an error showed the connection is unusable; the pool then drops it.
    pub(crate) broken: bool,
    /// What the liveness check knows of it; statements run through it.
    pub(crate) watch: Arc<ConnWatch>,
    metrics: Option<ConnMetrics>,
}

impl std::fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConn")
            .field("broken", &self.broken)
            .field("pid", &self.watch.pid)
            .finish_non_exhaustive()
    }
}

impl PooledConn {
    fn new(opened: Opened, metrics: Option<ConnMetrics>, watchdog: &Watchdog) -> PooledConn {
        if let Some(m) = &metrics {
            m.opened.increment(1);
        }
        watchdog.register(&opened.watch);
        PooledConn {
            conn: opened.conn,
            broken: false,
            watch: opened.watch,
            metrics,
        }
    }

    /// Whether the pool must drop this connection instead of handing it out again.
    pub(crate) fn unusable(&self) -> bool {
        self.broken || self.watch.unusable()
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        // Before the connection (and its descriptor) closes: see `socket.rs`.
        self.watch.forget_socket();
        if let Some(m) = &self.metrics {
            m.closed.increment(1);
            if self.unusable() {
                m.broken.increment(1);
            }
        }
    }
}

#[derive(Clone)]
pub(crate) struct ConnManager {
    pub(super) connector: Arc<Connector>,
    /// A replica's pool: an unreachable server is an error at once (the read goes to the
    /// primary), not an outage to wait through.
    pub(super) fail_fast: bool,
    pub(super) outage: Arc<Outage<Opened>>,
    pub(super) watchdog: Arc<Watchdog>,
    pub(super) health_check_after: Duration,
    pub(super) max_lifetime: Option<Duration>,
    pub(super) secret: Option<String>,
    pub(super) metrics: Option<ConnMetrics>,
}

impl ConnManager {
    async fn open(&self) -> Result<PooledConn, sqlx::Error> {
        loop {
            if self.outage.wait_usable().await.is_err() {
                return Err(sqlx::Error::PoolClosed);
            }
            if let Some(opened) = self.outage.take_spare() {
                return Ok(self.pooled(opened));
            }
            let attempted = Instant::now();
            // An attempt to a silent host waits `connect_timeout`; when the liveness check
            // declares the outage meanwhile, the reconnect loop takes over (it may already be
            // following the host list elsewhere).
            let connected = tokio::select! {
                r = self.connector.connect() => r,
                () = self.outage.wait_down() => continue,
            };
            match connected {
                Ok(opened) => {
                    self.outage.mark_up(None);
                    return Ok(self.pooled(opened));
                }
                Err(e) if unreachable(&e) && !self.fail_fast => {
                    let reason = redact(&describe(&e, &self.connector), self.secret.as_deref());
                    self.server_lost(reason, attempted);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn pooled(&self, opened: Opened) -> PooledConn {
        PooledConn::new(opened, self.metrics.clone(), &self.watchdog)
    }

    /// The server could not be reached by an attempt begun at `attempted`: starts the outage
    /// and its reconnect loop, unless one is on already (or this is a replica's pool, which
    /// fails fast instead).
    pub(super) fn server_lost(&self, reason: String, attempted: Instant) {
        if !self.fail_fast && self.outage.mark_down(reason, attempted) {
            spawn_reconnect(
                self.connector.clone(),
                self.outage.clone(),
                self.secret.clone(),
            );
        }
    }
}

impl managed::Manager for ConnManager {
    type Type = PooledConn;
    type Error = sqlx::Error;

    /// Opens a connection; while the server is unreachable, waits for the reconnect loop
    /// instead of trying (the caller's `acquire_timeout` bounds the wait).
    async fn create(&self) -> Result<PooledConn, sqlx::Error> {
        // Boxed: deadpool embeds this future in every checkout's future, and with the outage
        // handling inline it made every checkout carry it; opening connections is rare.
        Box::pin(self.open()).await
    }

    async fn recycle(&self, obj: &mut PooledConn, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        if obj.unusable() {
            return Err(RecycleError::message("connection marked broken"));
        }
        if let Some(max) = self.max_lifetime
            && metrics.age() > max
        {
            return Err(RecycleError::message("connection exceeded max_lifetime"));
        }
        // A connection used recently is healthy with near certainty; only long-idle ones pay a
        // round trip (firewalls and server restarts kill idle sockets), and so do all that sat
        // idle while another connection was found dead: after a restart or a mass
        // `pg_terminate_backend` they are dead too, and must not be handed to a statement.
        let last_checkout = metrics.recycled.unwrap_or(metrics.created);
        if metrics.last_used() > self.health_check_after || self.outage.lost_since(last_checkout) {
            let within = self.connector.liveness.check_timeout;
            let ping = obj.watch.run(None, obj.conn.ping());
            let failed = match tokio::time::timeout(within, ping).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => {
                    // A silent server: have the liveness check look at it now.
                    self.watchdog.kick();
                    sqlx::Error::PoolTimedOut
                }
            };
            obj.broken = true;
            self.outage.note_lost();
            return Err(RecycleError::Backend(failed));
        }
        Ok(())
    }
}

/// Backoff of the reconnect loop: it starts small because most outages are restarts of a
/// fraction of a second, and is capped well under a second so callers are served soon after the
/// server is back.
const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(20);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(400);

/// The pool's one reconnect loop: probes every host of the list at once, each on its own
/// backoff, until one gives a usable connection; then ends the outage and hands that connection
/// to the first waiter.
///
/// Hosts are probed side by side so that a silent one (each attempt waits `connect_timeout`)
/// does not delay noticing that another was promoted meanwhile.
fn spawn_reconnect(connector: Arc<Connector>, outage: Arc<Outage<Opened>>, secret: Option<String>) {
    tokio::spawn(async move {
        let errors = std::sync::Mutex::new(vec![String::new(); connector.hosts()]);
        let mut hosts: FuturesUnordered<_> = (0..connector.hosts())
            .map(|i| reconnect_host(&connector, &outage, i, &errors, secret.as_deref()))
            .collect();
        // Each host's loop ends only with an outcome for the whole outage: the first decides.
        match hosts.next().await.flatten() {
            Some(Ok(opened)) => outage.mark_up(Some(opened)),
            // The server answers, but with an error waiting will not fix (say, the database
            // was dropped): end the outage so callers get that error now.
            Some(Err(())) => outage.mark_up(None),
            // The outage ended (or the pool closed) by other means.
            None => {}
        }
    });
}

/// Probes host `i` until it gives a usable connection (`Some(Ok)`), answers with an error that
/// waiting will not fix (`Some(Err)`), or the outage is over (`None`).
async fn reconnect_host(
    connector: &Connector,
    outage: &Outage<Opened>,
    i: usize,
    errors: &std::sync::Mutex<Vec<String>>,
    secret: Option<&str>,
) -> Option<Result<Opened, ()>> {
    let mut delay = RECONNECT_FIRST_DELAY;
    loop {
        tokio::time::sleep(jittered(delay)).await;
        if outage.link() != Link::Down {
            return None;
        }
        let error = match connector.connect_to(i).await {
            Ok(Some(opened)) => return Some(Ok(opened)),
            Ok(None) => "read-only".to_string(),
            Err(e) if !unreachable(&e) => return Some(Err(())),
            Err(e) => redact(&describe(&e, connector), secret),
        };
        let summary = {
            let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
            errors[i] = error;
            match errors.as_slice() {
                [one] => one.clone(),
                all => all
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| !e.is_empty())
                    .map(|(h, e)| format!("{}: {e}", connector.host(h)))
                    .collect::<Vec<_>>()
                    .join("; "),
            }
        };
        outage.still_down(summary);
        delay = (delay * 2).min(RECONNECT_MAX_DELAY);
    }
}

pub(super) fn describe(e: &sqlx::Error, connector: &Connector) -> String {
    match e {
        sqlx::Error::PoolTimedOut => {
            format!(
                "no connection within connect_timeout ({:?})",
                connector.connect_timeout()
            )
        }
        e => e.to_string(),
    }
}

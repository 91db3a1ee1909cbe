//! The liveness check: a statement that waits long makes pgdbm ask the server, on a fresh
//! connection with a short deadline, whether it is there and still running that statement.
//!
//! Why: a server that goes silent (a partition, a frozen host, an address moved by a failover)
//! closes no socket, so nothing fails; a statement waits until the kernel gives up on its socket,
//! about 15 minutes. Kernel options on the socket (see `socket.rs`) help where pgdbm can reach it,
//! but not against a frozen server, whose kernel still acknowledges everything. The check works
//! on every platform and costs the hot path nothing: statements only bump two counters (see
//! `watch.rs`), and one task per pool reads them every tick.
//!
//! What it concludes:
//! - the server answers and runs the statement: it is merely slow; nothing happens (a long
//!   query is never broken), and it is asked again only after another `liveness_check_after`;
//! - the server answers but that process is idle or gone: the answer was lost on the way; that
//!   connection alone is cut;
//! - no answer within `liveness_timeout`: the server is unreachable. Every connection to it is
//!   cut (statements in flight fail with an unknown outcome, and reads outside a transaction run
//!   again), new connections try the other hosts of the list first, and the pool enters the
//!   outage of `outage.rs`: one WARN, one reconnect loop that follows the host list, callers
//!   served in order once a server takes connections again, one INFO.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::PoolShared;
use super::watch::ConnWatch;
use crate::runtime::config::Liveness;

/// How often the check reads the counters: the detection time is `liveness_check_after` plus up
/// to one tick.
const TICK: Duration = Duration::from_millis(250);
/// When something else saw a connection not answer (a health check, a ping), statements that
/// have waited this long are asked about at once.
const KICKED_AFTER: Duration = Duration::from_secs(1);
/// After the server said a statement's process is idle, the answer gets this long to arrive
/// before the connection is declared dead (it may have been on its way).
const LOST_ANSWER_GRACE: Duration = Duration::from_millis(200);

/// The connections of one pool, as the liveness check follows them.
pub(crate) struct Watchdog {
    watches: Mutex<Vec<Weak<ConnWatch>>>,
    /// One probe at a time per host.
    probing: Vec<AtomicBool>,
    kick: tokio::sync::Notify,
    check_after: Option<Duration>,
    timeout: Duration,
}

impl Watchdog {
    pub(crate) fn new(hosts: usize, liveness: &Liveness) -> Watchdog {
        Watchdog {
            watches: Mutex::new(Vec::new()),
            probing: (0..hosts).map(|_| AtomicBool::new(false)).collect(),
            kick: tokio::sync::Notify::new(),
            check_after: liveness.check_after,
            timeout: liveness.check_timeout,
        }
    }

    /// Follows a new connection.
    pub(crate) fn register(&self, watch: &Arc<ConnWatch>) {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        // Pruned here too, so a pool that churns connections without the check running (it is
        // off) does not grow the list.
        if watches.len() >= 64 && watches.len().is_power_of_two() {
            watches.retain(|w| w.strong_count() > 0);
        }
        watches.push(Arc::downgrade(watch));
    }

    /// Asks for a check now: something saw a connection not answer.
    pub(crate) fn kick(&self) {
        self.kick.notify_one();
    }

    fn live(&self) -> Vec<Arc<ConnWatch>> {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.retain(|w| w.strong_count() > 0);
        watches.iter().filter_map(Weak::upgrade).collect()
    }

    /// Cuts every connection to host `target`; returns how many there were.
    pub(crate) fn cut_host(&self, target: usize, reason: &str) -> usize {
        let on_host: Vec<_> = self
            .live()
            .into_iter()
            .filter(|w| w.target == target)
            .collect();
        for w in &on_host {
            w.cut(reason);
        }
        on_host.len()
    }
}

impl PoolShared {
    /// Starts the pool's liveness check (unless `liveness_check_after` turned it off); it ends
    /// with the pool.
    pub(super) fn spawn_watchdog(self: &Arc<Self>) {
        let watchdog = self.watchdog.clone();
        if watchdog.check_after.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let kicked = tokio::select! {
                    () = tokio::time::sleep(TICK) => false,
                    () = watchdog.kick.notified() => true,
                };
                let Some(pool) = weak.upgrade() else { return };
                if pool.pool.is_closed() {
                    return;
                }
                pool.check_liveness(kicked);
            }
        });
    }

    /// One tick: asks each host about the statements that have waited long on it.
    fn check_liveness(self: &Arc<Self>, kicked: bool) {
        let dog = &self.watchdog;
        let Some(after) = dog.check_after else { return };
        let threshold = if kicked {
            after.min(KICKED_AFTER)
        } else {
            after
        };
        let now = Instant::now();
        let mut by_host: Vec<Vec<(Arc<ConnWatch>, Duration)>> =
            (0..dog.probing.len()).map(|_| Vec::new()).collect();
        for w in dog.live() {
            let Some(waited) = w.busy_for(now) else {
                continue;
            };
            if waited >= threshold && !w.checked_within(after, now) {
                by_host[w.target].push((w, waited));
            }
        }
        // Asked to check with no statement waiting (a ping or a health check did not answer):
        // the host the pool uses now.
        let current = self.connector().current();
        for (target, waiting) in by_host.into_iter().enumerate() {
            if waiting.is_empty() && !(kicked && target == current) {
                continue;
            }
            if dog.probing[target].swap(true, Ordering::AcqRel) {
                continue;
            }
            let pool = self.clone();
            tokio::spawn(async move {
                pool.probe_host(target, waiting).await;
                pool.watchdog.probing[target].store(false, Ordering::Release);
            });
        }
    }

    /// Asks host `target` whether it answers and runs the statements `waiting` on it.
    async fn probe_host(&self, target: usize, waiting: Vec<(Arc<ConnWatch>, Duration)>) {
        let connector = self.connector();
        let attempted = Instant::now();
        let in_flight: Vec<Option<u64>> = waiting
            .iter()
            .map(|(w, _)| w.statement_in_flight())
            .collect();
        let pids: Vec<i32> = waiting
            .iter()
            .map(|(w, _)| w.pid)
            .filter(|&p| p != 0)
            .collect();
        let longest = waiting.iter().map(|(_, d)| *d).max();
        let states = match connector.probe(target, &pids, self.watchdog.timeout).await {
            Ok(Some(states)) => states,
            // It answers, and cannot say more.
            Ok(None) => return,
            Err(reason) => {
                let reason = match longest {
                    Some(d) => format!("{reason} (a statement had waited {d:.1?} for its answer)"),
                    None => reason,
                };
                return self.host_unreachable(target, &reason, attempted);
            }
        };
        // The server answers. A process it no longer runs a statement for (or that is gone)
        // sent its answer into a connection that lost it.
        let mut dead = Vec::new();
        for ((w, _), seen) in waiting.iter().zip(in_flight) {
            if w.pid == 0 || seen.is_none() {
                continue;
            }
            let state = states
                .iter()
                .find(|(p, _)| *p == w.pid)
                .map(|(_, s)| s.as_str());
            if !matches!(state, Some("active" | "fastpath function call")) {
                dead.push((w, seen, state.unwrap_or("gone").to_string()));
            }
        }
        if dead.is_empty() {
            return;
        }
        tokio::time::sleep(LOST_ANSWER_GRACE).await;
        for (w, seen, state) in dead {
            if w.statement_in_flight() == seen {
                let reason = format!(
                    "{} answers, but no longer runs this connection's statement (its server process {} is {state}): the answer was lost, and the connection with it",
                    connector.host(target),
                    w.pid
                );
                tracing::warn!(target: "pgdbm", pid = w.pid, "pgdbm: {reason}");
                w.cut(&reason);
                self.outage.note_lost();
            }
        }
    }

    /// Host `target` did not answer a fresh connection: cuts every connection to it, has new
    /// connections try the other hosts first, and (for a pool that waits through outages)
    /// starts the outage.
    pub(super) fn host_unreachable(&self, target: usize, reason: &str, attempted: Instant) {
        let connector = self.connector();
        connector.avoid(target);
        // The outage first: the statements the cut ends run again at once, and must wait for
        // the reconnect loop rather than try the silent host themselves.
        self.outage.note_lost();
        self.pool
            .manager()
            .server_lost(reason.to_string(), attempted);
        let cut = self.watchdog.cut_host(target, reason);
        tracing::debug!(
            host = %connector.host(target),
            connections = cut,
            "pgdbm: liveness check found the server unreachable"
        );
    }
}

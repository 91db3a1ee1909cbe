//! Whether the server answers, as the pool sees it.
//!
//! When a new connection cannot be opened because the server is unreachable, the pool enters an
//! outage: one WARN is logged, one reconnect loop (in `pool.rs`) probes the server with capped,
//! jittered backoff, and every checkout that needs a new connection waits here instead of
//! hammering a recovering server. The first connection the loop opens ends the outage (one INFO
//! with its length), is handed to the first waiter, and the others connect.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The link to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    Up,
    Down,
    Closed,
}

struct State<S> {
    down_since: Option<Instant>,
    /// When the last outage ended.
    up_since: Option<Instant>,
    last_error: Option<String>,
    /// A connection the reconnect loop opened, for the next checkout to take.
    spare: Option<S>,
}

/// An outage of the server of a pool whose connections are `S`.
pub(crate) struct Outage<S> {
    link: watch::Sender<Link>,
    state: Mutex<State<S>>,
    started: Instant,
    /// When a pooled connection was last found dead (nanoseconds after `started`; 0: never).
    /// Connections last checked out before then are pinged before they are handed out again.
    lost_at: AtomicU64,
    target: String,
    /// Mirrors `link == Down`, for the checkout's fast path.
    down: AtomicBool,
    /// Checkouts queued at `gate`.
    queued: AtomicUsize,
    /// A fair (FIFO) lock: while the server is away, and until every caller that waited for it
    /// has been served, checkouts take turns here, so they are served in the order they came.
    gate: tokio::sync::Mutex<()>,
}

/// A snapshot of an outage in progress.
#[derive(Clone, Debug)]
pub(crate) struct Down {
    pub(crate) since: Duration,
    pub(crate) last_error: String,
}

impl<S> Outage<S> {
    pub(crate) fn new(target: String) -> Outage<S> {
        Outage {
            link: watch::Sender::new(Link::Up),
            state: Mutex::new(State {
                down_since: None,
                up_since: None,
                last_error: None,
                spare: None,
            }),
            started: Instant::now(),
            lost_at: AtomicU64::new(0),
            target,
            down: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            gate: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn link(&self) -> Link {
        *self.link.borrow()
    }

    /// The outage in progress, if any.
    pub(crate) fn down(&self) -> Option<Down> {
        let s = self.state();
        Some(Down {
            since: s.down_since?.elapsed(),
            last_error: s.last_error.clone().unwrap_or_default(),
        })
    }

    /// Records that an attempt to connect begun at `attempted` could not reach the server.
    /// Returns `true` when this starts an outage, in which case the caller starts the reconnect
    /// loop. An attempt begun before the last outage ended says nothing new and is ignored.
    pub(crate) fn mark_down(&self, error: String, attempted: Instant) -> bool {
        let mut s = self.state();
        if self.link() == Link::Closed || s.up_since.is_some_and(|up| up > attempted) {
            return false;
        }
        self.note_lost();
        let starts = s.down_since.is_none();
        if starts {
            s.down_since = Some(Instant::now());
            tracing::warn!(
                target: "pgdbm",
                server = %self.target,
                error = %error,
                "pgdbm: lost the database server; checkouts wait (up to acquire_timeout) while the pool reconnects"
            );
        }
        s.last_error = Some(error);
        drop(s);
        if starts {
            self.down.store(true, Ordering::SeqCst);
            self.link.send_replace(Link::Down);
        }
        starts
    }

    /// Records a failed probe of the reconnect loop.
    pub(crate) fn still_down(&self, error: String) {
        self.state().last_error = Some(error);
    }

    /// Records that a connection was opened; ends the outage if there is one. `spare` is a
    /// connection for the next checkout.
    pub(crate) fn mark_up(&self, spare: Option<S>) {
        let mut s = self.state();
        if let Some(conn) = spare {
            s.spare = Some(conn);
        }
        let Some(since) = s.down_since.take() else {
            return;
        };
        s.up_since = Some(Instant::now());
        s.last_error = None;
        drop(s);
        tracing::info!(
            target: "pgdbm",
            server = %self.target,
            outage_ms = since.elapsed().as_millis() as u64,
            "pgdbm: the database server is back after {:.1?}",
            since.elapsed()
        );
        self.down.store(false, Ordering::SeqCst);
        self.link.send_if_modified(|l| {
            let changed = *l == Link::Down;
            if changed {
                *l = Link::Up;
            }
            changed
        });
    }

    pub(crate) fn take_spare(&self) -> Option<S> {
        self.state().spare.take()
    }

    pub(crate) fn close(&self) {
        self.state().spare = None;
        self.link.send_replace(Link::Closed);
    }

    /// Whether checkouts take turns now: during an outage, and until those who waited through
    /// it are served.
    pub(crate) fn queueing(&self) -> bool {
        self.down.load(Ordering::SeqCst) || self.queued.load(Ordering::SeqCst) != 0
    }

    /// Runs `checkout` in turn with the other callers that came during the outage, once the
    /// server is back; callers that come while nobody waits go straight to `checkout`.
    pub(crate) async fn in_turn<F: Future>(&self, checkout: impl FnOnce() -> F) -> F::Output {
        if !self.queueing() {
            return checkout().await;
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.queued);
        let _turn = self.gate.lock().await;
        // A closed pool makes the checkout itself fail, with the right error.
        let _ = self.wait_usable().await;
        checkout().await
    }

    /// Waits while the server is unreachable. `Err(())` when the pool was closed.
    pub(crate) async fn wait_usable(&self) -> Result<(), ()> {
        let mut rx = self.link.subscribe();
        match rx.wait_for(|l| *l != Link::Down).await.map(|l| *l) {
            Ok(Link::Up) => Ok(()),
            _ => Err(()),
        }
    }

    /// Resolves once an outage is in progress (for health checks that must not wait through it).
    pub(crate) async fn wait_down(&self) {
        let mut rx = self.link.subscribe();
        let _ = rx.wait_for(|l| *l == Link::Down).await;
    }

    /// Records that a pooled connection was found dead.
    pub(crate) fn note_lost(&self) {
        let nanos = self.started.elapsed().as_nanos().max(1) as u64;
        self.lost_at.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Whether a connection was found dead after `instant`.
    pub(crate) fn lost_since(&self, instant: Instant) -> bool {
        let lost = self.lost_at.load(Ordering::Relaxed);
        lost != 0
            && instant
                .checked_duration_since(self.started)
                .is_none_or(|d| (d.as_nanos() as u64) < lost)
    }
}

/// Whether a failure to open a connection means the server is (for now) unreachable, as
/// opposed to a mistake that waiting will not fix (bad password, missing database).
pub(crate) fn unreachable(e: &sqlx::Error) -> bool {
    match e {
        // Refused, reset, DNS failure, unexpected EOF during startup.
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        // Our connect timeout.
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // admin_shutdown, crash_shutdown, cannot_connect_now ("starting up", "shutting
            // down", "in recovery"), too_many_connections, and the connection-exception class.
            Some("57P01" | "57P02" | "57P03" | "53300")
                | Some("08000" | "08001" | "08004" | "08006")
        ),
        _ => false,
    }
}

/// Capped exponential backoff with ±25 % jitter, so replicas of a service that lost the server
/// together do not probe it in lock step.
pub(crate) fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.75 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_since_compares_with_the_last_loss() {
        let o = Outage::<()>::new("t".into());
        let before = Instant::now();
        assert!(!o.lost_since(before));
        std::thread::sleep(Duration::from_millis(2));
        o.note_lost();
        assert!(o.lost_since(before));
        std::thread::sleep(Duration::from_millis(2));
        assert!(!o.lost_since(Instant::now()));
    }

    #[test]
    fn one_outage_until_up() {
        let o = Outage::<()>::new("t".into());
        let attempted = Instant::now();
        assert!(o.mark_down("refused".into(), attempted));
        assert!(!o.mark_down("refused again".into(), Instant::now()));
        assert_eq!(o.link(), Link::Down);
        assert_eq!(o.down().unwrap().last_error, "refused again");
        o.mark_up(None);
        assert_eq!(o.link(), Link::Up);
        assert!(o.down().is_none());
        // A connect begun before the server came back is stale news.
        assert!(!o.mark_down("late".into(), attempted));
        assert_eq!(o.link(), Link::Up);
        assert!(o.mark_down("again".into(), Instant::now()));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(75) && d <= Duration::from_millis(125));
        }
    }
}

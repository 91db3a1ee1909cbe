//! What a listener tells the rest of the process: its state for `health_check()`, and the
//! metrics. The session task writes it, the application reads it through
//! [`Listener::status`](super::Listener::status) and the pool's registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram, SharedString};

use crate::runtime::observe::metrics::metric_names as n;

/// Whether a listener's session is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ListenerState {
    /// Connected, every channel listened to.
    Connected,
    /// The session was lost; the listener is reconnecting (notifications sent meanwhile are
    /// not heard: an [`Event::Reconnected`](crate::Event::Reconnected) follows).
    Reconnecting,
    /// The listener was dropped or its database closed.
    Closed,
}

/// A listener as [`Listener::status`](crate::Listener::status) and
/// [`HealthReport::listeners`](crate::HealthReport::listeners) show it. Durations serialise as
/// milliseconds, in fields whose names end in `_ms`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ListenerStatus {
    /// Connected, reconnecting or closed.
    pub state: ListenerState,
    /// While reconnecting: for how long. JSON: `reconnecting_for_ms`.
    #[serde(rename = "reconnecting_for_ms", serialize_with = "ms_opt")]
    pub reconnecting_for: Option<Duration>,
    /// While reconnecting: why the last attempt failed.
    pub last_error: Option<String>,
    /// The channels listened to (rendered names).
    pub channels: Vec<String>,
    /// The session's server process id (`None` while reconnecting, and behind a pooler).
    pub backend_pid: Option<i32>,
    /// `host:port` of the server the session is on.
    pub server: Option<String>,
    /// Notifications received since the listener was created.
    pub notifications: u64,
    /// Reconnections since the listener was created.
    pub reconnects: u64,
    /// Events received and not yet taken by the application.
    pub backlog: u64,
    /// How long the last event taken had waited in the listener. JSON: `last_lag_ms`.
    #[serde(rename = "last_lag_ms", serialize_with = "ms_opt")]
    pub last_lag: Option<Duration>,
}

fn ms_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
        None => s.serialize_none(),
    }
}

#[derive(Default)]
struct Session {
    down_since: Option<Instant>,
    last_error: Option<String>,
    channels: Vec<String>,
    pid: Option<i32>,
    server: Option<String>,
    closed: bool,
    last_lag: Option<Duration>,
}

/// The handles one listener records with.
struct Metrics {
    notifications: Counter,
    reconnects: Counter,
    lag: Histogram,
}

/// One listener's state, shared by its session task, its handle and the pool's registry.
pub(crate) struct Shared {
    session: Mutex<Session>,
    notifications: AtomicU64,
    reconnects: AtomicU64,
    backlog: AtomicU64,
    metrics: Option<Metrics>,
}

impl Shared {
    /// `pool`: the metrics' `pool` label, `None` when metrics are off.
    pub(crate) fn new(pool: Option<&str>) -> Shared {
        let metrics = pool.map(|pool| {
            describe_once();
            let pool = SharedString::from(pool.to_string());
            Metrics {
                notifications: metrics::counter!(n::LISTENER_NOTIFICATIONS, "pool" => pool.clone()),
                reconnects: metrics::counter!(n::LISTENER_RECONNECTS, "pool" => pool.clone()),
                lag: metrics::histogram!(n::LISTENER_LAG, "pool" => pool),
            }
        });
        Shared {
            session: Mutex::new(Session::default()),
            notifications: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            metrics,
        }
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn connected(&self, pid: Option<i32>, server: String) {
        let mut s = self.session();
        s.down_since = None;
        s.last_error = None;
        s.pid = pid;
        s.server = Some(server);
    }

    /// Marks the session lost; returns `false` when it was already (one outage, one WARN).
    pub(crate) fn lost(&self, error: String) -> bool {
        let mut s = self.session();
        s.pid = None;
        s.last_error = Some(error);
        if s.down_since.is_some() {
            return false;
        }
        s.down_since = Some(Instant::now());
        true
    }

    pub(crate) fn down_since(&self) -> Option<Instant> {
        self.session().down_since
    }

    pub(crate) fn set_channels(&self, channels: Vec<String>) {
        self.session().channels = channels;
    }

    pub(crate) fn closed(&self) {
        let mut s = self.session();
        s.closed = true;
        s.pid = None;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.session().closed
    }

    pub(crate) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.reconnects.increment(1);
        }
    }

    /// An event was queued for the application.
    pub(crate) fn queued(&self, notification: bool) {
        self.backlog.fetch_add(1, Ordering::Relaxed);
        if notification {
            self.notifications.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.notifications.increment(1);
            }
        }
    }

    /// The application took an event that was queued at `queued_at`.
    pub(crate) fn taken(&self, queued_at: Instant) {
        let lag = queued_at.elapsed();
        let _ = self
            .backlog
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1));
        self.session().last_lag = Some(lag);
        if let Some(m) = &self.metrics {
            m.lag.record(lag.as_secs_f64());
        }
    }

    pub(crate) fn status(&self) -> ListenerStatus {
        let s = self.session();
        let state = if s.closed {
            ListenerState::Closed
        } else if s.down_since.is_some() {
            ListenerState::Reconnecting
        } else {
            ListenerState::Connected
        };
        ListenerStatus {
            state,
            reconnecting_for: s.down_since.map(|d| d.elapsed()),
            last_error: s.last_error.clone(),
            channels: s.channels.clone(),
            backend_pid: s.pid,
            server: s.server.clone(),
            notifications: self.notifications.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            backlog: self.backlog.load(Ordering::Relaxed),
            last_lag: s.last_lag,
        }
    }
}

/// The listeners of one pool, for `health_check()`. Weak: a dropped listener leaves it.
#[derive(Default)]
pub(crate) struct Registry(Mutex<Vec<Weak<Shared>>>);

impl Registry {
    pub(crate) fn add(&self, listener: &Arc<Shared>) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(listener));
    }

    /// The status of every live listener.
    pub(crate) fn statuses(&self) -> Vec<ListenerStatus> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter_map(Weak::upgrade)
            .filter(|l| !l.is_closed())
            .map(|l| l.status())
            .collect()
    }
}

fn describe_once() {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        use metrics::Unit;
        metrics::describe_counter!(
            n::LISTENER_NOTIFICATIONS,
            Unit::Count,
            "Notifications received by listeners"
        );
        metrics::describe_counter!(
            n::LISTENER_RECONNECTS,
            Unit::Count,
            "Listener sessions re-established after a loss"
        );
        metrics::describe_histogram!(
            n::LISTENER_LAG,
            Unit::Seconds,
            "Time events waited in a listener before the application took them"
        );
    });
}

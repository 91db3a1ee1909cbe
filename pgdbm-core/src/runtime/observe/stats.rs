//! Query statistics kept in the process (pgdbm's monitored manager): totals, failures, mean and
//! percentiles, the recent statements and the slow ones. Off unless
//! [`DatabaseConfig::query_stats`](crate::DatabaseConfig::query_stats) turns them on; one lock
//! per statement when on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use super::operation::Operation;

/// How many slow statements are kept (the most recent ones).
pub(crate) const SLOW_LIST: usize = 100;

/// One statement as the statistics saw it.
///
/// The SQL is the rendered text that ran (with `$1`, `$2`, … for the values); argument values
/// are never kept: [`args`](Self::args) holds their PostgreSQL types only.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct QueryRecord {
    /// The statement as sent (placeholders rendered, values as `$n`).
    pub sql: Arc<str>,
    /// The type of each bound value (`TEXT`, `INT8`, …), masked: never the value. `?` where
    /// the type is not known before the server resolves it (sqlx queries run through
    /// `&Database`).
    pub args: Arc<[String]>,
    /// What kind of statement it is.
    pub operation: Operation,
    /// How long it took, first byte sent to last row received.
    pub duration: Duration,
    /// Rows returned (or affected, for `execute`); `None` when it failed.
    pub rows: Option<u64>,
    /// The error, when it failed.
    pub error: Option<String>,
    /// When it finished.
    pub at: SystemTime,
}

/// A snapshot of a pool's query statistics ([`Database::query_stats`](crate::Database::query_stats)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct QueryStats {
    /// Time covered: since the pool opened or the last reset.
    pub window: Duration,
    /// Statements run (failed ones included).
    pub total: u64,
    /// Statements that failed.
    pub failed: u64,
    /// Mean duration (zero when nothing ran).
    pub mean: Duration,
    /// Median duration.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The longest.
    pub max: Duration,
    /// The most recent statements, oldest first, at most
    /// [`query_history`](crate::DatabaseConfig::query_history) of them.
    pub recent: Vec<QueryRecord>,
    /// The most recent statements slower than `slow_query_threshold`, oldest first (at most 100).
    pub slow: Vec<QueryRecord>,
}

impl QueryStats {
    /// Statements per second over [`window`](Self::window).
    pub fn per_second(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.total as f64 / secs
        } else {
            0.0
        }
    }
}

/// One pool's statistics.
pub(crate) struct StatsStore {
    inner: Mutex<Inner>,
    history: usize,
    slow_after: Option<Duration>,
}

struct Inner {
    since: Instant,
    total: u64,
    failed: u64,
    sum: Duration,
    /// Durations in microseconds (1 µs to 1 h, 3 significant digits).
    histogram: Histogram<u64>,
    recent: VecDeque<QueryRecord>,
    slow: VecDeque<QueryRecord>,
}

impl Inner {
    fn new() -> Inner {
        Inner {
            since: Instant::now(),
            total: 0,
            failed: 0,
            sum: Duration::ZERO,
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds are valid"),
            recent: VecDeque::new(),
            slow: VecDeque::new(),
        }
    }
}

fn push_bounded(list: &mut VecDeque<QueryRecord>, cap: usize, r: QueryRecord) {
    if cap == 0 {
        return;
    }
    if list.len() == cap {
        list.pop_front();
    }
    list.push_back(r);
}

impl StatsStore {
    pub(crate) fn new(history: usize, slow_after: Option<Duration>) -> StatsStore {
        StatsStore {
            inner: Mutex::new(Inner::new()),
            history,
            slow_after,
        }
    }

    pub(crate) fn record(&self, r: QueryRecord) {
        let micros = (r.duration.as_micros() as u64).clamp(1, 3_600_000_000);
        let slow = self.slow_after.is_some_and(|t| r.duration > t);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.total += 1;
        g.failed += r.error.is_some() as u64;
        g.sum += r.duration;
        g.histogram.saturating_record(micros);
        if slow {
            push_bounded(&mut g.slow, SLOW_LIST, r.clone());
        }
        push_bounded(&mut g.recent, self.history, r);
    }

    pub(crate) fn snapshot(&self) -> QueryStats {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let at = |q: f64| Duration::from_micros(g.histogram.value_at_quantile(q));
        let (p50, p90, p99, max) = if g.total == 0 {
            Default::default()
        } else {
            (
                at(0.5),
                at(0.9),
                at(0.99),
                Duration::from_micros(g.histogram.max()),
            )
        };
        QueryStats {
            window: g.since.elapsed(),
            total: g.total,
            failed: g.failed,
            mean: if g.total == 0 {
                Duration::ZERO
            } else {
                Duration::from_nanos((g.sum.as_nanos() / u128::from(g.total)) as u64)
            },
            p50,
            p90,
            p99,
            max,
            recent: g.recent.iter().cloned().collect(),
            slow: g.slow.iter().cloned().collect(),
        }
    }

    pub(crate) fn reset(&self) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = Inner::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ms: u64, error: bool) -> QueryRecord {
        QueryRecord {
            sql: "SELECT 1".into(),
            args: Arc::from(Vec::new()),
            operation: Operation::Select,
            duration: Duration::from_millis(ms),
            rows: (!error).then_some(1),
            error: error.then(|| "boom".to_string()),
            at: SystemTime::now(),
        }
    }

    #[test]
    fn totals_percentiles_and_bounded_lists() {
        let s = StatsStore::new(10, Some(Duration::from_millis(50)));
        for ms in 1..=100 {
            s.record(rec(ms, ms % 10 == 0));
        }
        let snap = s.snapshot();
        assert_eq!((snap.total, snap.failed), (100, 10));
        assert_eq!(snap.mean, Duration::from_micros(50_500));
        let near = |d: Duration, ms: u64| {
            d.abs_diff(Duration::from_millis(ms)) < Duration::from_micros(100)
        };
        assert!(near(snap.p50, 50), "{:?}", snap.p50);
        assert!(near(snap.p90, 90), "{:?}", snap.p90);
        assert!(near(snap.p99, 99), "{:?}", snap.p99);
        assert!(near(snap.max, 100), "{:?}", snap.max);
        let recent: Vec<u128> = snap.recent.iter().map(|r| r.duration.as_millis()).collect();
        assert_eq!(recent, (91..=100).collect::<Vec<u128>>());
        assert_eq!(snap.slow.len(), 50);
        assert_eq!(snap.slow[0].duration, Duration::from_millis(51));
        s.reset();
        let snap = s.snapshot();
        assert_eq!((snap.total, snap.recent.len(), snap.slow.len()), (0, 0, 0));
        assert_eq!(snap.p99, Duration::ZERO);
    }
}

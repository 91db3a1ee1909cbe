//! What the pool records for operators: metrics and in-process query statistics.

use std::time::Duration;

use super::DatabaseConfig;

#[derive(Clone, Debug)]
pub(crate) struct ObserveConfig {
    pub(crate) metrics: bool,
    pub(crate) pool_name: Option<String>,
    pub(crate) metrics_interval: Duration,
    pub(crate) query_stats: bool,
    pub(crate) query_history: usize,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            metrics: true,
            pool_name: None,
            metrics_interval: Duration::from_secs(1),
            query_stats: false,
            query_history: 1000,
        }
    }
}

impl DatabaseConfig {
    /// Whether the pool records metrics through the [`metrics`](https://docs.rs/metrics) facade
    /// (default true). Without an installed recorder they cost next to nothing; install the
    /// recorder (for example `metrics-exporter-prometheus`) before `Database::connect`, because
    /// the pool registers its series when it opens. The names are in
    /// [`metric_names`](crate::metric_names).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn metrics(mut self, on: bool) -> Self {
        self.observe.metrics = on;
        self
    }

    /// The `pool` label of this pool's metrics (default: the database name). Give each pool of
    /// a process its own name when two reach the same database.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn pool_name(mut self, name: impl Into<String>) -> Self {
        self.observe.pool_name = Some(name.into());
        self
    }

    /// How often the pool gauges (size, idle, in use, waiting) are refreshed (default 1 s);
    /// counters and histograms are recorded as events happen.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn metrics_interval(mut self, every: Duration) -> Self {
        self.observe.metrics_interval = every;
        self
    }

    /// Keeps query statistics in the process (default off): totals, failures, mean and
    /// percentiles, the recent statements and the slow ones, read with
    /// [`Database::query_stats`](crate::Database::query_stats). Argument values are never kept,
    /// only their types.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn query_stats(mut self, on: bool) -> Self {
        self.observe.query_stats = on;
        self
    }

    /// How many recent statements the statistics keep (default 1000).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn query_history(mut self, statements: usize) -> Self {
        self.observe.query_history = statements;
        self
    }
}

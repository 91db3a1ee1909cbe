//! Debugging helpers on [`Database`](super::database::Database): a statement's plan
//! ([`explain`](super::database::Database::explain)), lock waits
//! ([`blocking_queries`](super::database::Database::blocking_queries)), long-running statements
//! ([`long_running_queries`](super::database::Database::long_running_queries)), table sizes
//! ([`table_sizes`](super::database::Database::table_sizes)) and a diagnostic report
//! ([`health_check`](super::database::Database::health_check)).
//!
//! Each helper is one SQL statement and returns a documented type that serialises with serde
//! (durations as milliseconds, in fields whose names end in `_ms`), which is what
//! `pgdbm inspect … --json` prints.

mod activity;
mod explain;
mod plan;
mod report;
mod sizes;

use std::time::Duration;

pub use activity::{BlockingQuery, LongRunningQuery};
pub use explain::ExplainOptions;
pub use plan::Explain;
pub use report::{HealthReport, ReplicaLag};
pub use sizes::TableSize;

/// A duration from seconds as PostgreSQL computed them: negative (clock skew between two
/// backends' timestamps), NaN or out-of-range values become zero.
fn from_secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or_default()
}

/// Serialises a duration as milliseconds (`f64`).
fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Serialises an optional duration as milliseconds (`f64`) or `null`.
fn ms_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ms(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_from_the_server_never_panic() {
        assert_eq!(from_secs(1.5), Duration::from_millis(1500));
        assert_eq!(from_secs(-0.002), Duration::ZERO);
        assert_eq!(from_secs(f64::NAN), Duration::ZERO);
        assert_eq!(from_secs(f64::INFINITY), Duration::ZERO);
    }
}

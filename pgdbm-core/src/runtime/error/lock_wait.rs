//! Why a migration gave up waiting for a lock, and who held it.
//!
//! Lives on the ground floor with the other error types: the migrator (above) fills it in, and
//! a caller reaches it through [`MigrationError::lock_wait`](super::MigrationError::lock_wait)
//! without naming anything from the migrator.

use std::fmt;
use std::time::Duration;

/// A session that held a lock a migration statement waited for, as `pg_stat_activity` showed
/// it while the statement waited (`pg_blocking_pids`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockingSession {
    /// Its backend process id (`pg_terminate_backend(pid)` ends it).
    pub pid: i32,
    /// The role it is logged in as.
    pub user: Option<String>,
    /// Its `application_name`, if it set one.
    pub application: Option<String>,
    /// `active`, `idle in transaction`, …
    pub state: Option<String>,
    /// Its current or last statement (at most 500 characters).
    pub query: Option<String>,
    /// How long its transaction had been open when it was seen.
    pub transaction_age: Option<Duration>,
}

impl fmt::Display for BlockingSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if let Some(u) = &self.user {
            write!(f, ", user {u}")?;
        }
        if let Some(a) = self.application.as_deref().filter(|a| !a.is_empty()) {
            write!(f, ", application `{a}`")?;
        }
        if let Some(s) = &self.state {
            write!(f, ", {s}")?;
        }
        if let Some(age) = self.transaction_age {
            write!(f, ", transaction open for {:.1} s", age.as_secs_f64())?;
        }
        if let Some(q) = self.query.as_deref().filter(|q| !q.is_empty()) {
            write!(
                f,
                ", last query: {}",
                q.split_whitespace().collect::<Vec<_>>().join(" ")
            )?;
        }
        Ok(())
    }
}

/// A migration statement could not get its lock within the lock timeout on any attempt
/// (SQLSTATE 55P03 each time): the source of the [`MigrationError`](super::MigrationError).
#[derive(Debug)]
#[non_exhaustive]
pub struct LockWaitError {
    /// How many times the file (or, in a no-transaction file, the statement) was tried.
    pub attempts: u32,
    /// The `lock_timeout` each attempt ran with.
    pub timeout: Duration,
    /// The sessions that held the lock on the last attempt; empty when none was seen (the
    /// holder ended just as the statement gave up).
    pub blockers: Vec<BlockingSession>,
    /// The server's error of the last attempt.
    pub source: sqlx::Error,
}

impl fmt::Display for LockWaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no lock within the lock timeout ({:?}) on any of {} attempt(s)",
            self.timeout, self.attempts
        )?;
        match self.blockers.as_slice() {
            [] => write!(f, "; no blocking session was seen"),
            sessions => {
                write!(f, "; held by ")?;
                for (i, s) in sessions.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; and ")?;
                    }
                    write!(f, "{s}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LockWaitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

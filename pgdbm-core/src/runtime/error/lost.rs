//! Statements that did not finish: a lost connection, a connection pgdbm cut (the liveness
//! check, a statement deadline), and what each says about whether the statement took effect.

use std::fmt;
use std::time::Duration;

use super::sql_line;

/// A statement deadline passed before the statement's answer came.
///
/// Either the statement was still waiting for a connection (it was not sent, so nothing
/// happened), or it had been sent: then pgdbm asked the server to cancel it
/// (`pg_cancel_backend`) and discarded the connection, but cannot know whether the server
/// had already applied it. Outside a transaction a write may have happened; inside one, the
/// transaction is rolled back (except when the statement was `COMMIT`).
#[derive(Debug)]
pub struct TimeoutError {
    sql: String,
    deadline: Duration,
    waited: Duration,
    sent: bool,
    in_transaction: bool,
}

impl TimeoutError {
    pub(crate) fn new(
        sql: impl Into<String>,
        deadline: Duration,
        waited: Duration,
        sent: bool,
        in_transaction: bool,
    ) -> Self {
        TimeoutError {
            sql: sql.into(),
            deadline,
            waited,
            sent,
            in_transaction,
        }
    }

    /// The SQL, after templating.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The deadline that passed.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// How long the call waited in all.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Whether the statement had been sent (otherwise it was still waiting for a connection).
    pub fn was_sent(&self) -> bool {
        self.sent
    }

    /// `true` when the statement may have taken effect: it was sent outside a transaction (or
    /// was the `COMMIT` of one) and no answer came. Check before running a write again.
    pub fn outcome_unknown(&self) -> bool {
        self.sent && (!self.in_transaction || self.sql == "COMMIT")
    }
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (deadline, waited) = (self.deadline, self.waited);
        if !self.sent {
            write!(
                f,
                "the statement deadline ({deadline:?}) passed after {waited:.1?} while waiting for a connection: the statement was not sent"
            )?;
        } else if self.outcome_unknown() {
            write!(
                f,
                "no answer within the statement deadline ({deadline:?}, waited {waited:.1?}): the statement was cancelled on the server and its connection discarded, but the outcome is unknown (a write may have been applied); it was not run again"
            )?;
        } else {
            write!(
                f,
                "no answer within the statement deadline ({deadline:?}, waited {waited:.1?}): the statement was cancelled on the server and its connection discarded, which rolls the transaction back; run the whole transaction again"
            )?;
        }
        sql_line(f, &self.sql)
    }
}

impl std::error::Error for TimeoutError {}

/// Why pgdbm ended a statement on its connection before the driver did, carried as the inner
/// error of a `sqlx::Error::Io` (kind `TimedOut`), so that every path that already treats an
/// I/O error as a lost connection drops the connection, and the retry rule can tell a silent
/// server from a broken one.
#[derive(Debug)]
pub(crate) struct Cut {
    pub(crate) why: CutReason,
    /// How long the statement had waited.
    pub(crate) waited: Duration,
    /// `false` when the connection was cut before the statement was handed to it: nothing was
    /// sent, so it is safe to run anywhere.
    pub(crate) sent: bool,
}

#[derive(Debug)]
pub(crate) enum CutReason {
    /// The liveness check found the server unreachable (or no longer running this
    /// connection's statement).
    Unreachable(String),
    /// The statement deadline passed.
    Deadline(Duration),
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.why {
            CutReason::Unreachable(reason) if self.sent => write!(
                f,
                "no answer from the server for {:.1?}: {reason}",
                self.waited
            ),
            CutReason::Unreachable(reason) => {
                write!(f, "the connection was dropped before use: {reason}")
            }
            CutReason::Deadline(d) => write!(
                f,
                "the statement deadline ({d:?}) passed after {:.1?}",
                self.waited
            ),
        }
    }
}

impl std::error::Error for Cut {}

impl Cut {
    pub(crate) fn into_sqlx(self) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, self))
    }

    /// Whether the statement deadline cut it.
    pub(crate) fn is_deadline(&self) -> bool {
        matches!(self.why, CutReason::Deadline(_))
    }

    /// The cut inside `e`, if pgdbm cut the statement short.
    pub(crate) fn of(e: &sqlx::Error) -> Option<&Cut> {
        match e {
            sqlx::Error::Io(io) => io.get_ref()?.downcast_ref::<Cut>(),
            _ => None,
        }
    }
}

/// Whether an error means the connection itself is gone.
pub(crate) fn is_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => session_terminated(db.code().as_deref()),
        _ => false,
    }
}

/// SQLSTATEs with which the server ends a session: admin_shutdown (`pg_terminate_backend`),
/// crash_shutdown, cannot_connect_now. The server rolls back whatever the session had in flight,
/// so a statement that failed this way did not take effect.
pub(crate) fn session_terminated(code: Option<&str>) -> bool {
    matches!(code, Some("57P01" | "57P02" | "57P03"))
}

/// Whether a statement that failed with `e` broke its connection while it was in flight, so
/// that the server may or may not have applied it (the server ending the session says it
/// rolled back; a connection cut before the statement was handed to it sent nothing).
pub(crate) fn outcome_unknown(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => Cut::of(e).is_none_or(|c| c.sent),
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Error;
    use super::*;

    fn cut(why: CutReason, sent: bool) -> sqlx::Error {
        Cut {
            why,
            waited: Duration::from_millis(2100),
            sent,
        }
        .into_sqlx()
    }

    #[test]
    fn a_cut_is_a_lost_connection_and_says_why() {
        let e = cut(
            CutReason::Unreachable("db:5432 did not answer".into()),
            true,
        );
        assert!(is_connection_lost(&e));
        assert!(outcome_unknown(&e));
        let c = Cut::of(&e).unwrap();
        assert!(!c.is_deadline());
        assert!(e.to_string().contains("db:5432 did not answer"), "{e}");
        let unsent = cut(CutReason::Unreachable("gone".into()), false);
        assert!(is_connection_lost(&unsent) && !outcome_unknown(&unsent));
        let other = sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "x"));
        assert!(Cut::of(&other).is_none() && outcome_unknown(&other));
    }

    #[test]
    fn a_deadline_becomes_error_timeout_that_says_what_happened() {
        let sent = Error::statement(
            "INSERT INTO t VALUES (1)",
            cut(CutReason::Deadline(Duration::from_secs(2)), true),
            false,
        );
        let Error::Timeout(t) = &sent else {
            panic!("{sent:?}")
        };
        assert_eq!(
            (t.deadline(), t.was_sent(), t.sql()),
            (Duration::from_secs(2), true, "INSERT INTO t VALUES (1)")
        );
        assert!(t.outcome_unknown() && sent.is_outcome_unknown() && sent.is_timeout());
        assert!(
            sent.to_string().contains("the outcome is unknown"),
            "{sent}"
        );
        let unsent = Error::statement(
            "SELECT 1",
            cut(CutReason::Deadline(Duration::from_secs(2)), false),
            false,
        );
        assert!(unsent.to_string().contains("was not sent") && !unsent.is_outcome_unknown());
        let in_tx = Error::statement(
            "UPDATE t SET a = 1",
            cut(CutReason::Deadline(Duration::from_secs(2)), true),
            true,
        );
        assert!(!in_tx.is_outcome_unknown(), "the transaction rolls back");
        assert!(
            in_tx.to_string().contains("rolls the transaction back"),
            "{in_tx}"
        );
        let commit = Error::statement(
            "COMMIT",
            cut(CutReason::Deadline(Duration::from_secs(2)), true),
            true,
        );
        assert!(commit.is_outcome_unknown());
    }

    #[test]
    fn a_write_lost_in_flight_says_its_outcome_is_unknown_and_a_killed_session_does_not() {
        let lost = Error::query(
            "INSERT INTO t VALUES (1)",
            cut(CutReason::Unreachable("silent".into()), true),
        );
        assert!(lost.is_connection_lost() && lost.is_outcome_unknown());
        assert!(
            lost.to_string().contains("the outcome is unknown"),
            "{lost}"
        );
        assert!(session_terminated(Some("57P01")));
        let refused = Error::query("SELECT 1", sqlx::Error::PoolTimedOut);
        assert!(!refused.is_outcome_unknown() && !refused.is_timeout());
    }
}

//! How soon a server that stops answering is noticed: connect deadline, TCP keepalives and
//! `TCP_USER_TIMEOUT` on each connection's socket, the liveness check of statements that wait
//! long, and the opt-in statement deadline.
//!
//! A server that goes away politely closes its sockets and every client notices at once. One
//! that goes silent (a partition, a frozen host, a failover that moves an address) closes
//! nothing: without these, a statement waits for the kernel to give up on the socket, about
//! 15 minutes on Linux. libpq's URL parameters for the kernel options (`keepalives`,
//! `keepalives_idle`, `keepalives_interval`, `keepalives_count`, `tcp_user_timeout`, and
//! `connect_timeout`) are accepted in the URL with libpq's units, and the setters here win
//! over them.

use std::time::Duration;

use super::DatabaseConfig;
use crate::runtime::error::{Error, Result};

/// Default per-host connect deadline: long enough for a busy server's fork and
/// authentication, short enough that a silent first host of a list does not stall startup.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle connection sends its first keepalive probe after this long without traffic.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVES_COUNT: u32 = 3;
/// Data the server has not acknowledged for this long ends the connection (and, with
/// keepalives, an idle connection whose probes go unanswered for this long).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// A statement waiting this long makes pgdbm check the server on a fresh connection.
const CHECK_AFTER: Duration = Duration::from_secs(3);
/// The deadline of that check, of pings of idle connections and of health checks.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The settings as given (setters, environment, serde); `None` falls back to the URL's libpq
/// parameter, then to the default.
#[derive(Clone, Debug, Default)]
pub(crate) struct LivenessConfig {
    pub(super) connect_timeout: Option<Duration>,
    pub(super) keepalives: Option<bool>,
    pub(super) keepalives_idle: Option<Duration>,
    pub(super) keepalives_interval: Option<Duration>,
    pub(super) keepalives_count: Option<u32>,
    /// `Some(None)`: switched off.
    pub(super) tcp_user_timeout: Option<Option<Duration>>,
    /// `Some(None)`: switched off.
    pub(super) check_after: Option<Option<Duration>>,
    pub(super) check_timeout: Option<Duration>,
    pub(super) statement_deadline: Option<Duration>,
}

/// libpq's connection parameters that sqlx does not know, taken out of a URL's query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct UrlLiveness {
    connect_timeout: Option<Duration>,
    keepalives: Option<bool>,
    keepalives_idle: Option<Duration>,
    keepalives_interval: Option<Duration>,
    keepalives_count: Option<u32>,
    tcp_user_timeout: Option<Option<Duration>>,
}

impl UrlLiveness {
    /// Takes `key=value` if it is one of libpq's liveness parameters (`Ok(true)`), with libpq's
    /// units: seconds, except `tcp_user_timeout` in milliseconds (`0`: the system's default).
    pub(crate) fn take(&mut self, key: &str, value: &str) -> Result<bool> {
        let bad = |what: &str| Error::config("url", format!("`{key}={value}` in the URL: {what}"));
        let number = || -> Result<u64> {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| bad("expected a whole number"))
        };
        match key {
            "connect_timeout" => {
                let secs = number()?;
                if secs == 0 {
                    return Err(bad(
                        "0 (wait forever) is not supported; give the seconds one host may take",
                    ));
                }
                // libpq treats 1 as 2: a single second is too short for a real handshake.
                self.connect_timeout = Some(Duration::from_secs(secs.max(2)));
            }
            "keepalives" => {
                self.keepalives = Some(match value.trim() {
                    "1" => true,
                    "0" => false,
                    _ => return Err(bad("expected 1 (on) or 0 (off)")),
                })
            }
            "keepalives_idle" => self.keepalives_idle = Some(positive_secs(number()?, &bad)?),
            "keepalives_interval" => {
                self.keepalives_interval = Some(positive_secs(number()?, &bad)?)
            }
            "keepalives_count" => {
                let n = number()?;
                if n == 0 || n > 127 {
                    return Err(bad("expected a count from 1 to 127"));
                }
                self.keepalives_count = Some(n as u32);
            }
            "tcp_user_timeout" => {
                let ms = number()?;
                self.tcp_user_timeout = Some((ms > 0).then(|| Duration::from_millis(ms)));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn positive_secs(secs: u64, bad: &impl Fn(&str) -> Error) -> Result<Duration> {
    if secs == 0 {
        return Err(bad("expected seconds greater than zero"));
    }
    Ok(Duration::from_secs(secs))
}

/// TCP keepalive settings of a connection's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Keepalive {
    pub(crate) idle: Duration,
    pub(crate) interval: Duration,
    pub(crate) count: u32,
}

/// The settings in effect, resolved once when a pool opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Liveness {
    pub(crate) connect_timeout: Duration,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) tcp_user_timeout: Option<Duration>,
    pub(crate) check_after: Option<Duration>,
    pub(crate) check_timeout: Duration,
}

impl DatabaseConfig {
    /// How long opening one connection may take, per host of a host list: TCP connect, TLS,
    /// startup and authentication (default 10 s; the URL's `connect_timeout`, in seconds,
    /// when not set here).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.liveness.connect_timeout = Some(timeout);
        self
    }

    /// TCP keepalives on each connection's socket (default on): an idle connection whose
    /// server went silent is closed by the kernel instead of lingering until its next use. The
    /// URL's `keepalives=0|1` when not set here. Applied where the platform allows it (Linux);
    /// see the README, "Silent failures".
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn keepalives(mut self, on: bool) -> Self {
        self.liveness.keepalives = Some(on);
        self
    }

    /// Idle time before the first keepalive probe (default 5 s; URL `keepalives_idle`, seconds).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn keepalives_idle(mut self, idle: Duration) -> Self {
        self.liveness.keepalives_idle = Some(idle);
        self
    }

    /// Time between keepalive probes (default 2 s; URL `keepalives_interval`, seconds).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn keepalives_interval(mut self, interval: Duration) -> Self {
        self.liveness.keepalives_interval = Some(interval);
        self
    }

    /// Unanswered keepalive probes before the kernel closes the connection (default 3; URL
    /// `keepalives_count`). With [`tcp_user_timeout`](Self::tcp_user_timeout) set, Linux closes
    /// the connection when probes stay unanswered for that long instead.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn keepalives_count(mut self, count: u32) -> Self {
        self.liveness.keepalives_count = Some(count);
        self
    }

    /// `TCP_USER_TIMEOUT` of each connection's socket (default 10 s; `None` leaves the
    /// system's; URL `tcp_user_timeout`, milliseconds): data the server has not acknowledged
    /// for this long ends the connection, so a statement sent into a partition fails after
    /// it rather than after the kernel's 15 minutes. A slow query is not affected: the
    /// server's kernel acknowledges what it received. Linux only.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn tcp_user_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.liveness.tcp_user_timeout = Some(timeout);
        self
    }

    /// When a statement has waited this long for its answer, pgdbm checks the server on a
    /// fresh connection within [`liveness_timeout`](Self::liveness_timeout) (default 3 s;
    /// `None` turns the check off). A server that answers there is merely slow and nothing
    /// happens; one that does not is an outage: the statements waiting on it end with an
    /// error whose outcome is unknown (reads outside a transaction run again on a new
    /// connection), and the pool reconnects, following a host list to a new primary. Works on
    /// every platform, and also catches a frozen server, which the kernel options cannot.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn liveness_check_after(mut self, after: Option<Duration>) -> Self {
        self.liveness.check_after = Some(after);
        self
    }

    /// The deadline of the liveness check's fresh connection and query, of the ping that
    /// validates an idle connection after a loss, and (capped at 2 s) of
    /// [`Database::health`](crate::Database::health) (default 3 s).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn liveness_timeout(mut self, timeout: Duration) -> Self {
        self.liveness.check_timeout = Some(timeout);
        self
    }

    /// A client-side deadline for each call (default `None`): checkout, statement and any
    /// re-run together. When it passes, pgdbm cancels the statement on the server
    /// (`pg_cancel_backend` from another connection; not behind a pooler), discards the
    /// connection and returns [`Error::Timeout`](crate::Error::Timeout). Inside a
    /// transaction it applies to each statement. Per handle:
    /// [`Database::with_deadline`](crate::Database::with_deadline).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn statement_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.liveness.statement_deadline = deadline;
        self
    }

    /// The statement deadline set with [`statement_deadline`](Self::statement_deadline).
    pub fn get_statement_deadline(&self) -> Option<Duration> {
        self.liveness.statement_deadline
    }

    /// The settings in effect: the setters', else the URL's libpq parameters, else the
    /// defaults.
    pub(crate) fn liveness(&self) -> Result<Liveness> {
        let url = self.url_params()?.liveness;
        let l = &self.liveness;
        let keepalive = l
            .keepalives
            .or(url.keepalives)
            .unwrap_or(true)
            .then(|| Keepalive {
                idle: l
                    .keepalives_idle
                    .or(url.keepalives_idle)
                    .unwrap_or(KEEPALIVES_IDLE),
                interval: l
                    .keepalives_interval
                    .or(url.keepalives_interval)
                    .unwrap_or(KEEPALIVES_INTERVAL),
                count: l
                    .keepalives_count
                    .or(url.keepalives_count)
                    .unwrap_or(KEEPALIVES_COUNT),
            });
        Ok(Liveness {
            connect_timeout: l
                .connect_timeout
                .or(url.connect_timeout)
                .unwrap_or(CONNECT_TIMEOUT),
            keepalive,
            tcp_user_timeout: l
                .tcp_user_timeout
                .or(url.tcp_user_timeout)
                .unwrap_or(Some(TCP_USER_TIMEOUT)),
            check_after: l.check_after.unwrap_or(Some(CHECK_AFTER)),
            check_timeout: l.check_timeout.unwrap_or(CHECK_TIMEOUT),
        })
    }

    /// Checks the settings of this module.
    pub(crate) fn validate_liveness(&self) -> Result<()> {
        let l = self.liveness()?;
        let positive = [
            ("connect_timeout", Some(l.connect_timeout)),
            ("keepalives_idle", l.keepalive.map(|k| k.idle)),
            ("keepalives_interval", l.keepalive.map(|k| k.interval)),
            ("liveness_check_after", l.check_after),
            ("liveness_timeout", Some(l.check_timeout)),
            ("statement_deadline", self.liveness.statement_deadline),
        ];
        for (field, value) in positive {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(Error::config(field, "must be greater than zero"));
            }
        }
        // The kernel takes whole seconds for keepalives (and at least one).
        for (field, value) in [
            ("keepalives_idle", l.keepalive.map(|k| k.idle)),
            ("keepalives_interval", l.keepalive.map(|k| k.interval)),
        ] {
            if value.is_some_and(|d| d.subsec_nanos() != 0 || d.as_secs() > 32_767) {
                return Err(Error::config(
                    field,
                    "the kernel takes whole seconds, from 1 to 32767",
                ));
            }
        }
        if let Some(k) = l.keepalive
            && !(1..=127).contains(&k.count)
        {
            return Err(Error::config(
                "keepalives_count",
                format!("{} probes: expected 1 to 127", k.count),
            ));
        }
        if l.tcp_user_timeout
            .is_some_and(|d| d.is_zero() || d.as_millis() > u128::from(u32::MAX))
        {
            return Err(Error::config(
                "tcp_user_timeout",
                "must be from 1 ms to about 49 days; None leaves the system's setting",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(url: &str) -> Result<Liveness> {
        DatabaseConfig::new(url).liveness()
    }

    #[test]
    fn defaults_detect_a_silent_peer_in_about_ten_seconds() {
        let l = resolved("postgresql://u@h/db").unwrap();
        assert_eq!(l.connect_timeout, Duration::from_secs(10));
        assert_eq!(
            l.keepalive,
            Some(Keepalive {
                idle: Duration::from_secs(5),
                interval: Duration::from_secs(2),
                count: 3
            })
        );
        assert_eq!(l.tcp_user_timeout, Some(Duration::from_secs(10)));
        assert_eq!(l.check_after, Some(Duration::from_secs(3)));
        assert_eq!(l.check_timeout, Duration::from_secs(3));
    }

    #[test]
    fn libpq_url_parameters_in_libpq_units_and_setters_win() {
        let url = "postgresql://u@h1:5432,h2:5433/db?keepalives_idle=7&keepalives_interval=3&keepalives_count=4&tcp_user_timeout=4500&connect_timeout=1&sslmode=disable";
        let l = resolved(url).unwrap();
        assert_eq!(l.connect_timeout, Duration::from_secs(2), "libpq's minimum");
        let k = l.keepalive.unwrap();
        assert_eq!(
            (k.idle, k.interval, k.count),
            (Duration::from_secs(7), Duration::from_secs(3), 4)
        );
        assert_eq!(l.tcp_user_timeout, Some(Duration::from_millis(4500)));
        let c = DatabaseConfig::new(url)
            .keepalives_idle(Duration::from_secs(9))
            .tcp_user_timeout(None)
            .connect_timeout(Duration::from_secs(4));
        let l = c.liveness().unwrap();
        assert_eq!(l.keepalive.unwrap().idle, Duration::from_secs(9));
        assert_eq!(l.tcp_user_timeout, None);
        assert_eq!(l.connect_timeout, Duration::from_secs(4));
        // sqlx never sees them (it would warn about each), the other parameters stay.
        let targets = c.connect_targets().unwrap();
        assert_eq!(targets.len(), 2);
        let off = resolved("postgresql://u@h/db?keepalives=0&tcp_user_timeout=0").unwrap();
        assert_eq!((off.keepalive, off.tcp_user_timeout), (None, None));
    }

    #[test]
    fn the_environment_and_serde_keys_set_them_too_and_win_over_the_url() {
        let vars = [
            (
                "DATABASE_URL",
                "postgresql://u@h/db?keepalives_idle=30&tcp_user_timeout=20000",
            ),
            ("DB_KEEPALIVES_IDLE_MS", "4000"),
            ("DB_KEEPALIVES_COUNT", "5"),
            ("DB_CONNECT_TIMEOUT_MS", "3000"),
            ("DB_LIVENESS_CHECK_AFTER_MS", "0"),
            ("DB_LIVENESS_TIMEOUT_MS", "1500"),
            ("DB_STATEMENT_DEADLINE_MS", "2500"),
        ];
        let c = DatabaseConfig::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        let l = c.liveness().unwrap();
        let k = l.keepalive.unwrap();
        assert_eq!((k.idle, k.count), (Duration::from_secs(4), 5));
        assert_eq!(
            l.tcp_user_timeout,
            Some(Duration::from_secs(20)),
            "from the URL"
        );
        assert_eq!(l.connect_timeout, Duration::from_secs(3));
        assert_eq!(l.check_after, None, "0 turns the check off");
        assert_eq!(l.check_timeout, Duration::from_millis(1500));
        assert_eq!(
            c.get_statement_deadline(),
            Some(Duration::from_millis(2500))
        );
        let e = DatabaseConfig::from_lookup(|k| {
            (k == "DB_KEEPALIVES").then(|| "sometimes".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("DB_KEEPALIVES"), "{e}");

        let c: DatabaseConfig = serde_json::from_str(
            r#"{"url": "postgresql://u@h/db", "keepalives": false, "tcp_user_timeout_ms": 0,
                "liveness_check_after_ms": 5000, "statement_deadline_ms": 800}"#,
        )
        .unwrap();
        let l = c.liveness().unwrap();
        assert_eq!((l.keepalive, l.tcp_user_timeout), (None, None));
        assert_eq!(l.check_after, Some(Duration::from_secs(5)));
        assert_eq!(c.get_statement_deadline(), Some(Duration::from_millis(800)));
    }

    #[test]
    fn bad_values_name_the_parameter_and_what_to_give() {
        let e = resolved("postgresql://u@h/db?keepalives_idle=soon")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("keepalives_idle=soon") && e.contains("whole number"),
            "{e}"
        );
        let e = resolved("postgresql://u@h/db?keepalives=yes")
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 (on) or 0 (off)"), "{e}");
        let e = resolved("postgresql://u@h/db?connect_timeout=0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wait forever"), "{e}");
        let e = DatabaseConfig::new("postgresql://u@h/db")
            .keepalives_idle(Duration::from_millis(1500))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("keepalives_idle") && e.contains("whole seconds"),
            "{e}"
        );
        let e = DatabaseConfig::new("postgresql://u@h/db")
            .statement_deadline(Some(Duration::ZERO))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("statement_deadline"), "{e}");
    }
}

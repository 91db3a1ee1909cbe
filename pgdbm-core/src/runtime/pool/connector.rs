//! Opening one connection: the host list (the host that last worked first), `target_session_attrs`,
//! the settings a pooler refuses at startup, the init commands, the connection's identity and
//! socket options, and the retries of the first connection. Also the short-lived connections of
//! the liveness check and of statement cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};

use super::socket::SocketHandle;
use super::watch::ConnWatch;
use crate::runtime::config::{DatabaseConfig, Liveness, PoolerMode, TargetSessionAttrs};
use crate::runtime::error::{ConnectError, Error, Result, redact};
use crate::runtime::outage::unreachable;

/// A new connection and what pgdbm knows of it.
pub(crate) struct Opened {
    pub(crate) conn: PgConnection,
    pub(crate) watch: Arc<ConnWatch>,
}

impl Opened {
    /// The bare connection, for a use outside the pool (its socket is no longer pgdbm's to
    /// shut down).
    pub(crate) fn into_conn(self) -> PgConnection {
        self.watch.forget_socket();
        self.conn
    }
}

/// Opens connections set up like the pool's (settings, init commands), bounded by
/// `connect_timeout` per host (a timeout is reported as `sqlx::Error::PoolTimedOut`). With a host
/// list it tries the host that last gave a usable connection first, then the others in order,
/// and with `target_session_attrs=read-write` it takes only a server whose sessions can write.
///
/// Starting from the host that last worked (rather than always from the first, as libpq does)
/// matters after a failover: the old primary, first in the list, may be silent, and every new
/// connection would wait `connect_timeout` on it before reaching the new one.
pub(crate) struct Connector {
    targets: Vec<PgConnectOptions>,
    attrs: TargetSessionAttrs,
    /// Run on each new connection: the session settings when a pooler refuses them in the
    /// startup packet, then the init commands.
    pub(super) setup: Vec<String>,
    pub(crate) liveness: Liveness,
    /// Behind a pooler the server process changes from one transaction to the next: no pid,
    /// no socket lookup by the server's view of the client port.
    pooled: bool,
    /// The host that last gave a usable connection (`usize::MAX`: none yet).
    preferred: AtomicUsize,
    /// The host last found unreachable, tried last until it gives a connection again.
    avoided: AtomicUsize,
}

const NO_HOST: usize = usize::MAX;

impl Connector {
    pub(crate) fn new(config: &DatabaseConfig) -> Result<Connector> {
        let mut setup = Vec::new();
        if config.pooler == Some(PoolerMode::Session)
            && let Some(sql) = config.settings_sql(false)
        {
            setup.push(sql);
        }
        setup.extend(config.init_commands.iter().cloned());
        Ok(Connector {
            targets: config.connect_targets()?,
            attrs: config.session_attrs(),
            setup,
            liveness: config.liveness()?,
            pooled: config.pooler.is_some(),
            preferred: AtomicUsize::new(NO_HOST),
            avoided: AtomicUsize::new(NO_HOST),
        })
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.liveness.connect_timeout
    }

    /// How many hosts the list has.
    pub(crate) fn hosts(&self) -> usize {
        self.targets.len()
    }

    /// `host:port` of host `target`, for messages.
    pub(crate) fn host(&self, target: usize) -> String {
        let o = &self.targets[target];
        format!("{}:{}", o.get_host(), o.get_port())
    }

    /// The host the pool's connections go to now.
    pub(crate) fn current(&self) -> usize {
        match self.preferred.load(Ordering::Relaxed) {
            NO_HOST => 0,
            i => i,
        }
    }

    /// Says that host `target` was found unreachable: new connections try the others first,
    /// and it last, until it gives a connection again.
    pub(crate) fn avoid(&self, target: usize) {
        self.avoided.store(target, Ordering::Relaxed);
        let _ =
            self.preferred
                .compare_exchange(target, NO_HOST, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Host `target` gave a usable connection: the next connections start there.
    fn worked(&self, target: usize) {
        self.preferred.store(target, Ordering::Relaxed);
        let _ =
            self.avoided
                .compare_exchange(target, NO_HOST, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A connection with the settings and init commands applied.
    pub(crate) async fn connect(&self) -> Result<Opened, sqlx::Error> {
        let mut opened = self.connect_bare().await?;
        self.set_up(&mut opened.conn).await?;
        Ok(opened)
    }

    /// A connection to host `target` only, set up like [`connect`](Self::connect); `None` when
    /// that server is read-only and the pool wants a writable one.
    pub(crate) async fn connect_to(&self, target: usize) -> Result<Option<Opened>, sqlx::Error> {
        let open = tokio::time::timeout(self.connect_timeout(), self.open_one(target));
        let Some(mut opened) = open.await.map_err(|_| sqlx::Error::PoolTimedOut)?? else {
            return Ok(None);
        };
        self.set_up(&mut opened.conn).await?;
        self.worked(target);
        Ok(Some(opened))
    }

    /// Runs the settings and init commands on `conn`.
    pub(super) async fn set_up(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        for cmd in &self.setup {
            let run = sqlx::raw_sql(sqlx::AssertSqlSafe(cmd.as_str())).execute(&mut *conn);
            match tokio::time::timeout(self.connect_timeout(), run).await {
                Ok(r) => r?,
                Err(_) => return Err(sqlx::Error::PoolTimedOut),
            };
        }
        Ok(())
    }

    /// The hosts in the order to try them: the one that last worked, then the list's order,
    /// the one last found unreachable at the end.
    fn order(&self) -> impl Iterator<Item = usize> + '_ {
        let known = |i: usize| (i < self.targets.len()).then_some(i);
        let first = known(self.preferred.load(Ordering::Relaxed));
        let last = known(self.avoided.load(Ordering::Relaxed)).filter(|&l| Some(l) != first);
        let between = (0..self.targets.len()).filter(move |&i| Some(i) != first && Some(i) != last);
        first.into_iter().chain(between).chain(last)
    }

    /// A connection to the first host that accepts it (and, for read-write, can write), before
    /// the settings and init commands.
    pub(super) async fn connect_bare(&self) -> Result<Opened, sqlx::Error> {
        let mut unreachable_err = None;
        let mut read_only = Vec::new();
        for i in self.order() {
            let open = tokio::time::timeout(self.connect_timeout(), self.open_one(i));
            match open.await {
                Ok(Ok(Some(opened))) => {
                    self.worked(i);
                    return Ok(opened);
                }
                Ok(Ok(None)) => read_only.push(self.host(i)),
                // Wrong password, unknown database: trying other hosts would hide it.
                Ok(Err(e)) if !unreachable(&e) => return Err(e),
                Ok(Err(e)) => unreachable_err = Some(e),
                Err(_) => unreachable_err = Some(sqlx::Error::PoolTimedOut),
            }
        }
        if read_only.is_empty()
            && let Some(e) = unreachable_err
        {
            return Err(e);
        }
        Err(self.no_writable_host(&read_only))
    }

    /// Reported as unreachable, so the pool waits for a primary (a failover in progress)
    /// within acquire_timeout instead of failing at once.
    pub(crate) fn no_writable_host(&self, read_only: &[String]) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!(
                "no server of the host list accepts writes (target_session_attrs=read-write): {} read-only{}",
                read_only.join(", "),
                if self.targets.len() > read_only.len() {
                    ", the others unreachable"
                } else {
                    ""
                }
            ),
        ))
    }

    /// Opens a connection to host `target` and learns who it is; `None` when the server is
    /// read-only and the pool wants a writable one.
    async fn open_one(&self, target: usize) -> Result<Option<Opened>, sqlx::Error> {
        let opts = &self.targets[target];
        let mut conn = opts.connect().await?;
        let (pid, socket, read_only) = if self.pooled {
            let read_only = match self.attrs {
                TargetSessionAttrs::ReadWrite => {
                    let row = sqlx::raw_sql("SHOW transaction_read_only")
                        .fetch_one(&mut conn)
                        .await?;
                    row.try_get::<String, _>(0)? == "on"
                }
                _ => false,
            };
            (0, SocketHandle::none(), read_only)
        } else {
            // One round trip for all three: the pid, for the liveness check and cancelling a
            // statement; the client port, to find the socket; read-only-ness, for read-write.
            let row = sqlx::raw_sql(
                "SELECT pg_backend_pid()::text, coalesce(inet_client_port(), 0)::text, current_setting('transaction_read_only')",
            )
            .fetch_one(&mut conn)
            .await?;
            let number = |i: usize| -> Result<i64, sqlx::Error> {
                let text: String = row.try_get(i)?;
                text.parse()
                    .map_err(|e| sqlx::Error::Protocol(format!("unexpected `{text}`: {e}")))
            };
            let (pid, client_port) = (number(0)? as i32, number(1)? as u16);
            let read_only =
                self.attrs == TargetSessionAttrs::ReadWrite && row.try_get::<String, _>(2)? == "on";
            let socket = match client_port {
                0 => SocketHandle::none(),
                port => SocketHandle::find(port, opts.get_port(), &self.liveness),
            };
            (pid, socket, read_only)
        };
        if read_only {
            socket.forget();
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(Opened {
            conn,
            watch: Arc::new(ConnWatch::new(pid, target, socket)),
        }))
    }

    /// Checks that host `target` answers within `within` on a connection of its own, and asks
    /// it what the server processes `pids` are doing: their `pg_stat_activity.state`, absent for
    /// a process that is gone; `None` when the server answered but that could not be asked. The
    /// error says why the server could not be reached.
    ///
    /// Any answer of the server counts, an error too (too many connections, a changed
    /// password): it is there. Behind a pooler only the pooler's own answer to the connection is
    /// asked for, since a query would wait for a server connection in the pooler's queue, and a
    /// busy pooler is not a silent one.
    pub(crate) async fn probe(
        &self,
        target: usize,
        pids: &[i32],
        within: Duration,
    ) -> std::result::Result<Option<Vec<(i32, String)>>, String> {
        let check = async {
            let mut conn = match self.targets[target].connect().await {
                Ok(conn) => conn,
                Err(sqlx::Error::Database(_)) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let states = if self.pooled {
                None
            } else {
                let asked = sqlx::query_as::<_, (i32, Option<String>)>(
                    "SELECT pid, state FROM pg_stat_activity WHERE pid = ANY($1)",
                )
                .bind(pids)
                .persistent(false)
                .fetch_all(&mut conn)
                .await;
                match asked {
                    Ok(rows) => Some(
                        rows.into_iter()
                            .map(|(pid, state)| (pid, state.unwrap_or_default()))
                            .collect(),
                    ),
                    Err(sqlx::Error::Database(_)) => None,
                    Err(e) => return Err(e.to_string()),
                }
            };
            let _ = conn.close().await;
            Ok(states)
        };
        match tokio::time::timeout(within, check).await {
            Ok(r) => r.map_err(|e: String| format!("{}: {e}", self.host(target))),
            Err(_) => Err(format!(
                "{} did not answer a new connection within {within:?}",
                self.host(target)
            )),
        }
    }

    /// Asks host `target` to cancel what server process `pid` is running
    /// (`pg_cancel_backend`), within `within`. Best effort: a server that cannot be reached
    /// will not finish the statement's answer either.
    pub(crate) async fn cancel(&self, target: usize, pid: i32, within: Duration) {
        let cancel = async {
            let mut conn = self.targets[target].connect().await?;
            sqlx::query("SELECT pg_cancel_backend($1)")
                .bind(pid)
                .persistent(false)
                .execute(&mut conn)
                .await?;
            conn.close().await
        };
        match tokio::time::timeout(within, cancel).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(pid, error = %e, "pgdbm: could not cancel a statement"),
            Err(_) => tracing::debug!(pid, "pgdbm: could not cancel a statement in time"),
        }
    }
}

pub(super) async fn connect_with_retry(
    config: &DatabaseConfig,
    connector: &Connector,
) -> Result<PgConnection> {
    let mut delay = config.retry_delay;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = Instant::now();
        let err = match connector.connect_bare().await {
            Ok(opened) => return Ok(opened.into_conn()),
            Err(e) => e,
        };
        // Authentication and missing-database errors will not fix themselves.
        let permanent = matches!(&err, sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("28P01" | "28000" | "3D000")));
        if attempt >= config.retry_attempts || permanent {
            return Err(connect_error(config, attempt, err));
        }
        tracing::warn!(
            attempt,
            target = %config.target(),
            error = %redact(&err.to_string(), config.secret().as_deref()),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pgdbm: connection attempt failed; retrying in {:?}",
            delay
        );
        tokio::time::sleep(delay).await;
        delay = delay
            .mul_f64(config.retry_backoff)
            .min(config.retry_max_delay);
    }
}

pub(crate) fn connect_error(config: &DatabaseConfig, attempts: u32, source: sqlx::Error) -> Error {
    let (host, port, database, user) = config.endpoint();
    let reason = match &source {
        sqlx::Error::PoolTimedOut => match config.liveness() {
            Ok(l) => format!("timed out after {:?}", l.connect_timeout),
            Err(_) => "timed out".to_string(),
        },
        e => redact(&e.to_string(), config.secret().as_deref()),
    };
    Error::Connect(Box::new(ConnectError {
        host,
        port,
        database,
        user,
        attempts,
        reason,
        source,
    }))
}

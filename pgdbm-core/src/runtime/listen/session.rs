//! The listener's dedicated session and the task that keeps it: connects (host list, read-write
//! servers only when asked, the kernel's keepalives on its socket), serves LISTEN/UNLISTEN and
//! notifications, pings an idle session to find a silent server, and after any loss reconnects
//! by the outage rule, re-issues every LISTEN and only then yields `Reconnected`.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, Pool, Postgres, Row};
use tokio::sync::{mpsc, oneshot};

use super::Event;
use super::status::Shared;
use crate::ident::quote_identifier;
use crate::runtime::config::{DatabaseConfig, Liveness, TargetSessionAttrs};
use crate::runtime::error::{Error, Result, redact};
use crate::runtime::outage::{jittered, unreachable};
use crate::runtime::pool::{PoolShared, SocketHandle, connect_error};

/// What the handle asks of the task.
pub(crate) enum Command {
    Listen(Vec<String>, oneshot::Sender<Result<()>>),
    Unlisten(Vec<String>, oneshot::Sender<Result<()>>),
}

/// An event and when it was queued (for the lag).
pub(crate) type Queued = (Instant, Result<Event>);

/// The reconnect loop's backoff, as the pool's (`outage.rs`): 20 ms doubling to 400 ms.
const FIRST_DELAY: Duration = Duration::from_millis(20);
const MAX_DELAY: Duration = Duration::from_millis(400);
/// After an error that waiting will not fix (a changed password), try again this rarely.
const PERMANENT_DELAY: Duration = Duration::from_secs(5);
/// How often an idle session without liveness pings checks that its database is still open.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// One connected session.
pub(crate) struct Session {
    pg: PgListener,
    pool: Pool<Postgres>,
    socket: SocketHandle,
    target: usize,
    /// The server process (`None` behind a pooler).
    pid: Option<i32>,
}

impl Session {
    /// Ends the session; `clean` sends `UNLISTEN *` and closes it politely.
    fn end(self, clean: bool) {
        self.socket.forget();
        let Session { mut pg, pool, .. } = self;
        tokio::spawn(async move {
            if clean {
                let _ = tokio::time::timeout(Duration::from_secs(1), pg.unlisten_all()).await;
            }
            // Dropping it returns the connection, which closing the pool then closes.
            drop(pg);
            let _ = tokio::time::timeout(Duration::from_secs(2), pool.close()).await;
        });
    }
}

/// Why serving a session stopped.
enum Stop {
    Lost(String),
    Closed,
}

pub(crate) struct Task {
    config: DatabaseConfig,
    targets: Vec<PgConnectOptions>,
    attrs: TargetSessionAttrs,
    liveness: Liveness,
    /// Behind a session pooler: no server pid, no socket lookup.
    pooled: bool,
    preferred: usize,
    avoided: Option<usize>,
    channels: Vec<String>,
    shared: Arc<Shared>,
    pool: Weak<PoolShared>,
    events: mpsc::UnboundedSender<Queued>,
    commands: mpsc::UnboundedReceiver<Command>,
}

impl Task {
    pub(crate) fn new(
        config: DatabaseConfig,
        pool: &Arc<PoolShared>,
        shared: Arc<Shared>,
        events: mpsc::UnboundedSender<Queued>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Result<Task> {
        let app = format!(
            "{}_listener",
            config
                .connect_options()?
                .get_application_name()
                .unwrap_or("app")
                .trim_end_matches("_pool")
        );
        let targets = config
            .connect_targets()?
            .into_iter()
            .map(|o| o.application_name(&app))
            .collect();
        Ok(Task {
            targets,
            attrs: config.session_attrs(),
            liveness: config.liveness()?,
            pooled: config.pooler.is_some(),
            config,
            preferred: 0,
            avoided: None,
            channels: Vec::new(),
            shared,
            pool: Arc::downgrade(pool),
            events,
            commands,
        })
    }

    /// The first session, with the config's retries (`retry_attempts`, `retry_delay`): the
    /// listener is created connected, or not at all.
    pub(crate) async fn first_session(&mut self) -> Result<Session> {
        let mut delay = self.config.retry_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.open().await {
                Ok(s) => {
                    self.shared.connected(s.pid, host(&self.targets[s.target]));
                    return Ok(s);
                }
                Err(e) if attempt >= self.config.retry_attempts || !unreachable(&e) => {
                    return Err(connect_error(&self.config, attempt, e));
                }
                Err(_) => tokio::time::sleep(delay).await,
            }
            delay = delay
                .mul_f64(self.config.retry_backoff)
                .min(self.config.retry_max_delay);
        }
    }

    /// Keeps the listener's session until the handle is dropped or the database closed.
    pub(crate) async fn run(mut self, first: Session) {
        let mut session = Some(first);
        loop {
            let s = match session.take() {
                Some(s) => s,
                None => match self.reconnect().await {
                    Some(s) => s,
                    None => break,
                },
            };
            match self.serve(s).await {
                Stop::Lost(why) => self.lost(why),
                Stop::Closed => break,
            }
        }
        self.shared.closed();
    }

    fn database_closed(&self) -> bool {
        self.pool.upgrade().is_none_or(|p| p.pool.is_closed())
    }

    fn lost(&mut self, why: String) {
        let why = redact(&why, self.config.secret().as_deref());
        if self.shared.lost(why.clone()) {
            tracing::warn!(
                target: "pgdbm",
                server = %self.config.target(),
                error = %why,
                "pgdbm: a listener lost its session; reconnecting (notifications sent meanwhile are not heard: the listener yields Reconnected when it is back)"
            );
        }
    }

    /// Serves one session: commands, notifications, pings.
    async fn serve(&mut self, mut s: Session) -> Stop {
        enum Step {
            Command(Option<Command>),
            Received(std::result::Result<Option<sqlx::postgres::PgNotification>, sqlx::Error>),
            Idle,
        }
        let mut quiet_since = Instant::now();
        loop {
            let wait = self.liveness.check_after.unwrap_or(IDLE_TICK);
            let tick = tokio::time::sleep_until((quiet_since + wait).into());
            let step = tokio::select! {
                biased;
                c = self.commands.recv() => Step::Command(c),
                r = s.pg.try_recv() => Step::Received(r),
                () = tick => Step::Idle,
            };
            match step {
                Step::Command(None) => {
                    s.end(true);
                    return Stop::Closed;
                }
                Step::Command(Some(cmd)) => {
                    if let Err(why) = self.command(&mut s, cmd).await {
                        s.end(false);
                        return Stop::Lost(why);
                    }
                }
                Step::Received(Ok(Some(n))) => {
                    quiet_since = Instant::now();
                    self.send(Ok(Event::Notification {
                        channel: n.channel().to_string(),
                        payload: n.payload().to_string(),
                        pid: n.process_id(),
                    }));
                }
                Step::Received(Ok(None)) => {
                    s.end(false);
                    return Stop::Lost("the server closed the listener's session".into());
                }
                Step::Received(Err(e)) => {
                    s.end(false);
                    return Stop::Lost(e.to_string());
                }
                Step::Idle => {
                    if self.database_closed() {
                        s.end(true);
                        return Stop::Closed;
                    }
                    if self.liveness.check_after.is_some()
                        && let Err(why) = self.ping(&mut s).await
                    {
                        s.end(false);
                        return Stop::Lost(why);
                    }
                    quiet_since = Instant::now();
                }
            }
        }
    }

    /// Asks an idle session's server whether it is there: no answer within `liveness_timeout`
    /// means it went silent (a partition, a frozen host), which no socket error would report.
    async fn ping(&mut self, s: &mut Session) -> std::result::Result<(), String> {
        let within = self.liveness.check_timeout;
        match tokio::time::timeout(within, s.pg.execute("SELECT 1")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                // The host goes last in the order until it answers again (a failover moves on).
                self.avoided = Some(s.target);
                s.socket.shut_down();
                Err(format!(
                    "{} did not answer the listener's ping within {within:?}",
                    host(&self.targets[s.target])
                ))
            }
        }
    }

    /// Runs a LISTEN/UNLISTEN command. `Err` when the session was lost meanwhile; the command
    /// is then answered as done, since the reconnect re-issues the channels it leaves.
    async fn command(&mut self, s: &mut Session, cmd: Command) -> std::result::Result<(), String> {
        let (listen, names, reply) = match cmd {
            Command::Listen(n, r) => (true, n, r),
            Command::Unlisten(n, r) => (false, n, r),
        };
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| self.channels.contains(n) != listen)
            .collect();
        let sql = statement(if listen { "LISTEN" } else { "UNLISTEN" }, &names);
        let result = match sql {
            None => Ok(()),
            Some(sql) => {
                let run = s.pg.execute(sqlx::AssertSqlSafe(sql.clone()));
                match tokio::time::timeout(self.liveness.connect_timeout, run).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e @ sqlx::Error::Database(_))) => {
                        let _ = reply.send(Err(Error::query(sql, e)));
                        return Ok(());
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "no answer to {} within {:?}",
                        if listen { "LISTEN" } else { "UNLISTEN" },
                        self.liveness.connect_timeout
                    )),
                }
            }
        };
        self.apply(listen, names);
        let _ = reply.send(Ok(()));
        result
    }

    /// Records the channels a command adds or removes.
    fn apply(&mut self, listen: bool, names: Vec<String>) {
        if listen {
            for n in names {
                if !self.channels.contains(&n) {
                    self.channels.push(n);
                }
            }
        } else {
            self.channels.retain(|c| !names.contains(c));
        }
        self.shared.set_channels(self.channels.clone());
    }

    fn send(&self, event: Result<Event>) {
        self.shared
            .queued(matches!(event, Ok(Event::Notification { .. })));
        let _ = self.events.send((Instant::now(), event));
    }

    /// Reconnects after a loss: one loop with capped, jittered backoff over the host list, the
    /// channels re-issued on the new session before `Reconnected` is yielded. `None` when the
    /// handle was dropped or the database closed meanwhile.
    async fn reconnect(&mut self) -> Option<Session> {
        let since = self.shared.down_since().unwrap_or_else(Instant::now);
        let mut delay = FIRST_DELAY;
        let mut reported = false;
        loop {
            if self.database_closed() {
                return None;
            }
            let pause = match self.open().await {
                Ok(mut s) => match self.relisten(&mut s).await {
                    Ok(()) => {
                        self.back(&s, since);
                        return Some(s);
                    }
                    Err(e) => {
                        s.end(false);
                        self.lost(e);
                        jittered(delay)
                    }
                },
                Err(e) if unreachable(&e) => {
                    self.lost(e.to_string());
                    jittered(delay)
                }
                Err(e) => {
                    // A changed password or a dropped database: say so once, keep trying slowly.
                    self.lost(e.to_string());
                    if !reported {
                        reported = true;
                        self.send(Err(connect_error(&self.config, 1, e)));
                    }
                    PERMANENT_DELAY
                }
            };
            if !self.pause(pause).await {
                return None;
            }
            delay = (delay * 2).min(MAX_DELAY);
        }
    }

    /// Waits `pause` while taking commands (recorded for the next session, answered at once).
    /// `false` when the handle was dropped.
    async fn pause(&mut self, pause: Duration) -> bool {
        let until = tokio::time::Instant::now() + pause;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                c = self.commands.recv() => match c {
                    None => return false,
                    Some(Command::Listen(n, r)) => { self.apply(true, n); let _ = r.send(Ok(())); }
                    Some(Command::Unlisten(n, r)) => { self.apply(false, n); let _ = r.send(Ok(())); }
                },
            }
        }
    }

    /// Re-issues every LISTEN on a new session, in one statement.
    async fn relisten(&self, s: &mut Session) -> std::result::Result<(), String> {
        let Some(sql) = statement("LISTEN", &self.channels) else {
            return Ok(());
        };
        let run = s.pg.execute(sqlx::AssertSqlSafe(sql));
        match tokio::time::timeout(self.liveness.connect_timeout, run).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer to LISTEN on the new session".into()),
        }
    }

    /// The session is back: one INFO, the counters, and `Reconnected` for the application.
    fn back(&self, s: &Session, since: Instant) {
        let after = since.elapsed();
        self.shared.connected(s.pid, host(&self.targets[s.target]));
        self.shared.reconnected();
        tracing::info!(
            target: "pgdbm",
            server = %host(&self.targets[s.target]),
            outage_ms = after.as_millis() as u64,
            channels = self.channels.len(),
            "pgdbm: a listener is back after {after:.1?}; every channel is listened to again"
        );
        self.send(Ok(Event::Reconnected { after }));
    }

    /// A session on the first host that takes it: the one that last worked, the list's order,
    /// the one last found silent at the end.
    async fn open(&mut self) -> std::result::Result<Session, sqlx::Error> {
        let n = self.targets.len();
        let mut order: Vec<usize> = std::iter::once(self.preferred)
            .chain((0..n).filter(|&i| i != self.preferred))
            .collect();
        if let Some(a) = self.avoided
            && let Some(pos) = order.iter().position(|&i| i == a)
        {
            let a = order.remove(pos);
            order.push(a);
        }
        let mut last = None;
        let mut read_only = Vec::new();
        for i in order {
            match tokio::time::timeout(self.liveness.connect_timeout, self.open_one(i)).await {
                Ok(Ok(Some(s))) => {
                    self.preferred = i;
                    if self.avoided == Some(i) {
                        self.avoided = None;
                    }
                    return Ok(s);
                }
                Ok(Ok(None)) => read_only.push(host(&self.targets[i])),
                Ok(Err(e)) if !unreachable(&e) => return Err(e),
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(sqlx::Error::PoolTimedOut),
            }
        }
        match last {
            Some(e) if read_only.is_empty() => Err(e),
            _ => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!(
                    "no server of the host list accepts writes (target_session_attrs=read-write): {} read-only",
                    read_only.join(", ")
                ),
            ))),
        }
    }

    /// A session on host `target`, and who it is; `None` when it is read-only and writable
    /// servers were asked for.
    async fn open_one(&self, target: usize) -> std::result::Result<Option<Session>, sqlx::Error> {
        let opts = self.targets[target].clone();
        // sqlx's pool retries a refused connection (and "starting up") until its acquire
        // timeout: a bare connection first makes an unreachable host of the list cost a refusal,
        // not `connect_timeout`, and lets this task's own backoff pace the retries.
        opts.connect().await?.close().await?;
        // A pool of one, which sqlx's listener needs: it alone reaches the notifications of a
        // connection. It never reconnects by itself; this task does.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(self.liveness.connect_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .test_before_acquire(false)
            .connect_lazy_with(opts.clone());
        let mut pg = PgListener::connect_with(&pool).await?;
        pg.eager_reconnect(false);
        pg.ignore_pool_close_event(true);
        let sql = if self.pooled {
            "SELECT '0', '0', current_setting('transaction_read_only')"
        } else {
            "SELECT pg_backend_pid()::text, coalesce(inet_client_port(), 0)::text, current_setting('transaction_read_only')"
        };
        let row = sqlx::raw_sql(sql).fetch_one(&mut pg).await?;
        let number = |i: usize| -> std::result::Result<i64, sqlx::Error> {
            let text: String = row.try_get(i)?;
            text.parse()
                .map_err(|e| sqlx::Error::Protocol(format!("unexpected `{text}`: {e}")))
        };
        let (pid, port) = (number(0)? as i32, number(1)? as u16);
        if self.attrs == TargetSessionAttrs::ReadWrite && row.try_get::<String, _>(2)? == "on" {
            drop(pg);
            pool.close().await;
            return Ok(None);
        }
        let socket = match port {
            0 => SocketHandle::none(),
            port => SocketHandle::find(port, opts.get_port(), &self.liveness),
        };
        Ok(Some(Session {
            pg,
            pool,
            socket,
            target,
            pid: (pid != 0).then_some(pid),
        }))
    }
}

fn host(o: &PgConnectOptions) -> String {
    format!("{}:{}", o.get_host(), o.get_port())
}

/// `LISTEN "a"; LISTEN "b"` for the channels, `None` for none.
fn statement(verb: &str, channels: &[String]) -> Option<String> {
    (!channels.is_empty()).then(|| {
        channels
            .iter()
            .map(|c| format!("{verb} {}", quote_identifier(c)))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

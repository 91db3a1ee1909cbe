//! The task that keeps a listener's session (opened by `connect.rs`): serves LISTEN/UNLISTEN
//! and notifications, pings an idle session to find a silent server, and after any loss reconnects
//! by the outage rule, re-issues every LISTEN and only then yields `Reconnected`.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sqlx::Executor;
use tokio::sync::{mpsc, oneshot};

use super::Event;
use super::connect::{Hosts, Session};
use super::status::Shared;
use crate::ident::quote_identifier;
use crate::runtime::config::{DatabaseConfig, Liveness};
use crate::runtime::error::{Error, Result, redact};
use crate::runtime::outage::{jittered, unreachable};
use crate::runtime::pool::{PoolShared, connect_error};

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

/// Why serving a session stopped.
enum Stop {
    Lost(String),
    Closed,
}

pub(crate) struct Task {
    config: DatabaseConfig,
    hosts: Hosts,
    liveness: Liveness,
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
        Ok(Task {
            hosts: Hosts::new(&config)?,
            liveness: config.liveness()?,
            config,
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
            match self.hosts.open().await {
                Ok(s) => {
                    self.shared.connected(s.pid, self.hosts.host(s.target));
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
                self.hosts.avoid(s.target);
                s.socket.shut_down();
                Err(format!(
                    "{} did not answer the listener's ping within {within:?}",
                    self.hosts.host(s.target)
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
            let pause = match self.hosts.open().await {
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
        self.shared.connected(s.pid, self.hosts.host(s.target));
        self.shared.reconnected();
        tracing::info!(
            target: "pgdbm",
            server = %self.hosts.host(s.target),
            outage_ms = after.as_millis() as u64,
            channels = self.channels.len(),
            "pgdbm: a listener is back after {after:.1?}; every channel is listened to again"
        );
        self.send(Ok(Event::Reconnected { after }));
    }
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

//! Events: LISTEN/NOTIFY that never loses a wake-up silently.
//!
//! A [`Listener`] holds a session of its own (never one of the pool's: a pooled connection goes
//! back to other callers, and LISTEN is session state). A task keeps that session: it
//! re-establishes it after a restart, a `pg_terminate_backend`, a failover (following the host
//! list like the pool, `target_session_attrs` included) or a silent server (found by pinging an
//! idle session every `liveness_check_after`, and by the kernel keepalives set on its socket),
//! logging one WARN when it is lost and one INFO when it is back. Before it yields
//! [`Event::Reconnected`] it has issued every LISTEN again, so an application that re-reads its
//! state on `Reconnected` misses nothing: notifications sent while the session was away are
//! lost (PostgreSQL keeps none for a session that is gone), and `Reconnected` says so.
//!
//! Why sqlx's `PgListener` underneath, and only as a connection: in sqlx 0.9 only it can read
//! a connection's notifications (the stream's notification buffer is crate-private, so a bare
//! `PgConnection` has no way to them). But its own reconnection hides what an application
//! must know: after a lost connection it reconnects quietly, and notifications sent meanwhile
//! are gone with no event to say so (launchbadge/sqlx#447, #1102). So each session here is a
//! fresh `PgListener` on a one-connection sqlx pool of the host this task chose, with
//! `eager_reconnect(false)`: when it reports the loss the task drops it, opens the next one by
//! pgdbm's rules (host order, read-write check, socket keepalives, backoff), issues the LISTENs
//! itself and yields `Reconnected`.
//!
//! Behind PgBouncer in transaction mode a session's LISTEN is lost after its first transaction,
//! so the listener connects to [`DatabaseConfig::session_url`](crate::DatabaseConfig::session_url),
//! and refuses to be created without one.

mod channel;
mod connect;
mod notify;
mod session;
mod status;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::runtime::database::Database;
use crate::runtime::error::{Error, Result};
use channel::render_channel;
pub use notify::MAX_PAYLOAD_BYTES;
use session::{Command, Queued, Task};
pub(crate) use status::Registry;
use status::Shared;
pub use status::{ListenerState, ListenerStatus};

/// What a [`Listener`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A notification on a channel this listener listens to.
    Notification {
        /// The channel (its rendered name, e.g. `jobs_acme`).
        channel: String,
        /// The payload (empty when none was given).
        payload: String,
        /// The process id of the session that sent it.
        pid: u32,
    },
    /// The session was lost and is back, every channel listened to again. Notifications sent
    /// while it was away were not heard: re-read whatever state they would have announced.
    Reconnected {
        /// How long the listener was without a session.
        after: Duration,
    },
}

/// A LISTEN session: [`listen`](Self::listen) to channels, then take [`Event`]s with
/// [`recv`](Self::recv) or as a [`Stream`](futures_core::Stream). Made by
/// [`Database::listener`].
///
/// The contract is at-least-once for state, not for messages: every notification sent while
/// the session is up arrives, in the order the transactions committed; when the session is lost
/// the listener reconnects by itself and yields [`Event::Reconnected`] once it listens again.
/// Treat notifications as wake-ups and re-read your state on `Reconnected`:
///
/// ```no_run
/// # async fn demo(db: pgdbm_core::Database) -> pgdbm_core::Result<()> {
/// use pgdbm_core::Event;
/// let mut listener = db.listener().await?;
/// listener.listen("jobs_{{schema}}").await?;
/// loop {
///     match listener.recv().await? {
///         Event::Notification { payload, .. } => println!("job {payload} is ready"),
///         // Something may have been sent while the session was away: look at the table.
///         Event::Reconnected { .. } => println!("re-scan the queue"),
///         _ => {}
///     }
/// }
/// # }
/// ```
///
/// Events wait in the listener until they are taken, without bound: `status().backlog` shows
/// a consumer that falls behind. Dropping it ends the session.
pub struct Listener {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<Queued>,
    shared: Arc<Shared>,
    schema: Option<String>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("schema", &self.schema)
            .field("status", &self.shared.status())
            .finish()
    }
}

impl Database {
    /// A [`Listener`] on a session of its own, connected before this returns (with the
    /// config's `retry_attempts`). Channel names given to it render for this handle's schema.
    ///
    /// Behind PgBouncer in transaction mode it connects to the config's
    /// [`session_url`](crate::DatabaseConfig::session_url).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (field `session_url`) when the URL leads to PgBouncer in transaction
    /// mode and no session URL is set; [`Error::Connect`] when no session could be opened;
    /// [`Error::PoolClosed`] when the database is closed.
    pub async fn listener(&self) -> Result<Listener> {
        if self.is_closed() {
            return Err(Error::PoolClosed);
        }
        let pool = &self.inner.pool;
        let config = pool.config.for_sessions()?;
        let label = config.observe.metrics.then(|| {
            config
                .observe
                .pool_name
                .clone()
                .unwrap_or_else(|| config.get_database())
        });
        let shared = Arc::new(Shared::new(label.as_deref()));
        let (event_tx, events) = mpsc::unbounded_channel();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let mut task = Task::new(config, pool, shared.clone(), event_tx, command_rx)?;
        let first = task.first_session().await?;
        pool.listeners.add(&shared);
        tokio::spawn(task.run(first));
        Ok(Listener {
            commands,
            events,
            shared,
            schema: self.schema().map(str::to_string),
        })
    }
}

impl Listener {
    /// Listens to `channel`, rendered for the handle's schema (`jobs_{{schema}}` on a handle of
    /// `acme` is `jobs_acme`). When it returns, notifications on it arrive; while the session is
    /// being re-established it returns at once, and the LISTEN is issued before the
    /// [`Event::Reconnected`] that follows. Listening twice to a channel is one LISTEN.
    ///
    /// # Errors
    ///
    /// Before anything is sent: [`Error::Identifier`] (kind `Channel`) for a name that is not an
    /// identifier, [`Error::Template`] / [`Error::InvalidInput`] for a bad placeholder in it.
    /// [`Error::Query`] when the server refuses (a standby refuses LISTEN), and
    /// [`Error::PoolClosed`] when the database was closed.
    pub async fn listen(&self, channel: &str) -> Result<()> {
        let channel = render_channel(channel, self.schema.as_deref())?;
        self.ask(|reply| Command::Listen(vec![channel], reply))
            .await
    }

    /// Stops listening to `channel` (rendered as for [`listen`](Self::listen)). Notifications
    /// on it that had already arrived are still yielded.
    ///
    /// # Errors
    ///
    /// As [`listen`](Self::listen).
    pub async fn unlisten(&self, channel: &str) -> Result<()> {
        let channel = render_channel(channel, self.schema.as_deref())?;
        self.ask(|reply| Command::Unlisten(vec![channel], reply))
            .await
    }

    async fn ask(&self, cmd: impl FnOnce(oneshot::Sender<Result<()>>) -> Command) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(cmd(reply))
            .map_err(|_| Error::PoolClosed)?;
        answer.await.map_err(|_| Error::PoolClosed)?
    }

    /// The next event, waiting for it.
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`] once the database was closed (and every event before it was
    /// taken); [`Error::Connect`] once per outage when reconnecting meets an error that
    /// waiting will not fix (a changed password, a dropped database); the listener keeps
    /// trying, every few seconds, and later calls go on.
    pub async fn recv(&mut self) -> Result<Event> {
        match self.events.recv().await {
            Some(queued) => self.take(queued),
            None => Err(Error::PoolClosed),
        }
    }

    /// The next event if one has arrived, without waiting: `None` when there is none.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Option<Result<Event>> {
        match self.events.try_recv() {
            Ok(queued) => Some(self.take(queued)),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Err(Error::PoolClosed)),
        }
    }

    fn take(&self, (queued_at, event): (Instant, Result<Event>)) -> Result<Event> {
        self.shared.taken(queued_at);
        event
    }

    /// The channels listened to (rendered names), the session's state and counters.
    pub fn status(&self) -> ListenerStatus {
        self.shared.status()
    }
}

impl futures_core::Stream for Listener {
    type Item = Result<Event>;

    /// Events as [`recv`](Listener::recv) yields them; ends when the database is closed.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(queued)) => Poll::Ready(Some(self.take(queued))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

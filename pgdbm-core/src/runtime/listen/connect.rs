//! Opening a listener's session on the host list: the host that last worked first, the one last
//! found silent at the end (as the pool's connector does), only a writable server under
//! `target_session_attrs=read-write`, and the kernel's keepalives on its socket.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Pool, Postgres, Row};

use crate::runtime::config::{DatabaseConfig, Liveness, TargetSessionAttrs};
use crate::runtime::error::Result;
use crate::runtime::outage::unreachable;
use crate::runtime::pool::SocketHandle;

/// One connected session.
pub(crate) struct Session {
    pub(super) pg: PgListener,
    pool: Pool<Postgres>,
    pub(super) socket: SocketHandle,
    /// Which host of the list it is on.
    pub(super) target: usize,
    /// The server process (`None` behind a pooler).
    pub(super) pid: Option<i32>,
}

impl Session {
    /// Ends the session; `clean` sends `UNLISTEN *` and closes it politely.
    pub(super) fn end(self, clean: bool) {
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

/// The host list of a listener's sessions, and which host to try first.
pub(crate) struct Hosts {
    targets: Vec<PgConnectOptions>,
    attrs: TargetSessionAttrs,
    liveness: Liveness,
    /// Behind a session pooler: no server pid, no socket lookup.
    pooled: bool,
    preferred: usize,
    avoided: Option<usize>,
}

impl Hosts {
    /// The hosts of `config`, its sessions named `<application>_listener` in
    /// `pg_stat_activity`.
    pub(crate) fn new(config: &DatabaseConfig) -> Result<Hosts> {
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
        Ok(Hosts {
            targets,
            attrs: config.session_attrs(),
            liveness: config.liveness()?,
            pooled: config.pooler.is_some(),
            preferred: 0,
            avoided: None,
        })
    }

    /// `host:port` of host `target`.
    pub(crate) fn host(&self, target: usize) -> String {
        let o = &self.targets[target];
        format!("{}:{}", o.get_host(), o.get_port())
    }

    /// Host `target` went silent: it is tried last until it gives a session again.
    pub(crate) fn avoid(&mut self, target: usize) {
        self.avoided = Some(target);
    }

    /// A session on the first host that takes it: the one that last worked, the list's order,
    /// the one last found silent at the end.
    pub(super) async fn open(&mut self) -> std::result::Result<Session, sqlx::Error> {
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
                Ok(Ok(None)) => read_only.push(self.host(i)),
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

//! Opening one connection: the host list in order, `target_session_attrs`, the settings a
//! pooler refuses at startup, the init commands, and the retries of the first connection.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use crate::runtime::config::{DatabaseConfig, PoolerMode, TargetSessionAttrs};
use crate::runtime::error::{ConnectError, Error, Result, redact};
use crate::runtime::outage::unreachable;

/// Opens connections set up like the pool's (settings, init commands), bounded by
/// `connect_timeout` per host (a timeout is reported as `sqlx::Error::PoolTimedOut`). With a host
/// list it tries the hosts in order, as libpq does, and with `target_session_attrs=read-write`
/// it takes only a server whose sessions can write.
pub(crate) struct Connector {
    targets: Vec<PgConnectOptions>,
    attrs: TargetSessionAttrs,
    /// Run on each new connection: the session settings when a pooler refuses them in the
    /// startup packet, then the init commands.
    pub(super) setup: Vec<String>,
    pub(super) connect_timeout: Duration,
}

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
            connect_timeout: config.connect_timeout,
        })
    }

    /// A connection with the settings and init commands applied.
    pub(crate) async fn connect(&self) -> Result<PgConnection, sqlx::Error> {
        let mut conn = self.connect_bare().await?;
        self.set_up(&mut conn).await?;
        Ok(conn)
    }

    /// Runs the settings and init commands on `conn`.
    pub(super) async fn set_up(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        for cmd in &self.setup {
            let run = sqlx::raw_sql(sqlx::AssertSqlSafe(cmd.as_str())).execute(&mut *conn);
            match tokio::time::timeout(self.connect_timeout, run).await {
                Ok(r) => r?,
                Err(_) => return Err(sqlx::Error::PoolTimedOut),
            };
        }
        Ok(())
    }

    /// A connection to the first host of the list that accepts it (and, for read-write, can
    /// write), before the settings and init commands.
    pub(super) async fn connect_bare(&self) -> Result<PgConnection, sqlx::Error> {
        let mut unreachable_err = None;
        let mut read_only = Vec::new();
        for opts in &self.targets {
            let open = tokio::time::timeout(self.connect_timeout, self.open_one(opts));
            match open.await {
                Ok(Ok(Some(conn))) => return Ok(conn),
                Ok(Ok(None)) => read_only.push(format!("{}:{}", opts.get_host(), opts.get_port())),
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
        // Reported as unreachable, so the pool waits for a primary (a failover in progress)
        // within acquire_timeout instead of failing at once.
        Err(sqlx::Error::Io(std::io::Error::new(
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
        )))
    }

    /// `None` when the server is read-only and the pool wants a writable one.
    async fn open_one(&self, opts: &PgConnectOptions) -> Result<Option<PgConnection>, sqlx::Error> {
        let mut conn = opts.connect().await?;
        if self.attrs == TargetSessionAttrs::ReadWrite {
            let row = sqlx::raw_sql("SHOW transaction_read_only")
                .fetch_one(&mut conn)
                .await?;
            let read_only: String = sqlx::Row::try_get(&row, 0)?;
            if read_only == "on" {
                let _ = conn.close().await;
                return Ok(None);
            }
        }
        Ok(Some(conn))
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
            Ok(conn) => return Ok(conn),
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
        sqlx::Error::PoolTimedOut => format!("timed out after {:?}", config.connect_timeout),
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

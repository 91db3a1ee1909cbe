//! `DatabaseConfig`: how to reach the server, how big the pool is, what each connection runs.

mod connect;
mod env;
mod file;
mod liveness;
mod mask;
mod observe;
mod servers;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{Error, Result};
use crate::ident::{IdentifierKind, validate_identifier};

pub use connect::SslMode;
pub(crate) use liveness::Liveness;
use liveness::LivenessConfig;
use mask::masked_url;
pub(crate) use observe::ObserveConfig;
use servers::ReplicaConfig;
pub(crate) use servers::split_hosts;
pub use servers::{PoolerMode, TargetSessionAttrs};

/// A password that never shows in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"****\"")
    }
}

/// Configuration of a [`Database`](crate::Database): connection, pool, per-connection settings,
/// TLS, retries and logging. Build it in code or from the environment.
///
/// Setters never fail; [`validate`](Self::validate) (called by `Database::connect` before any
/// network traffic, and by [`from_env`](Self::from_env)) reports every invalid value with the
/// setting's name.
///
/// ```
/// use std::time::Duration;
/// use pgdbm_core::DatabaseConfig;
/// let config = DatabaseConfig::new("postgresql://app:s3cret@localhost:5432/myservice")
///     .schema("myservice")
///     .min_connections(5)
///     .max_connections(20)
///     .statement_timeout(Some(Duration::from_secs(30)));
/// config.validate().unwrap();
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct DatabaseConfig {
    url: Option<String>,
    host: String,
    port: u16,
    database: String,
    user: String,
    password: Option<Secret>,
    pub(crate) schema: Option<String>,
    pub(crate) min_connections: usize,
    pub(crate) max_connections: usize,
    pub(crate) acquire_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) health_check_after: Duration,
    statement_timeout: Option<Duration>,
    idle_in_transaction_session_timeout: Option<Duration>,
    lock_timeout: Option<Duration>,
    application_name: Option<String>,
    server_settings: BTreeMap<String, String>,
    pub(crate) init_commands: Vec<String>,
    ssl_mode: Option<SslMode>,
    ssl_root_cert: Option<PathBuf>,
    ssl_client_cert: Option<PathBuf>,
    ssl_client_key: Option<PathBuf>,
    pub(crate) retry_attempts: u32,
    pub(crate) retry_delay: Duration,
    pub(crate) retry_backoff: f64,
    pub(crate) retry_max_delay: Duration,
    pub(crate) slow_query_threshold: Option<Duration>,
    statement_cache_capacity: usize,
    tenant_lanes: Option<usize>,
    pub(crate) template_cache_capacity: usize,
    pub(crate) create_schema: bool,
    pub(crate) observe: ObserveConfig,
    pub(crate) replicas: ReplicaConfig,
    pub(crate) pooler: Option<PoolerMode>,
    /// A direct URL for sessions (LISTEN) when `url` leads to a transaction pooler.
    session_url: Option<String>,
    target_session_attrs: Option<TargetSessionAttrs>,
    liveness: LivenessConfig,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            host: "localhost".into(),
            port: 5432,
            database: "postgres".into(),
            user: "postgres".into(),
            password: None,
            schema: None,
            min_connections: 5,
            max_connections: 20,
            acquire_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(300)),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            health_check_after: Duration::from_secs(30),
            statement_timeout: Some(Duration::from_millis(60_000)),
            idle_in_transaction_session_timeout: Some(Duration::from_millis(60_000)),
            lock_timeout: Some(Duration::from_millis(5_000)),
            application_name: None,
            server_settings: BTreeMap::new(),
            init_commands: Vec::new(),
            ssl_mode: None,
            ssl_root_cert: None,
            ssl_client_cert: None,
            ssl_client_key: None,
            retry_attempts: 3,
            retry_delay: Duration::from_secs(1),
            retry_backoff: 2.0,
            retry_max_delay: Duration::from_secs(30),
            slow_query_threshold: Some(Duration::from_secs(1)),
            statement_cache_capacity: 256,
            tenant_lanes: None,
            template_cache_capacity: 1024,
            create_schema: true,
            observe: ObserveConfig::default(),
            replicas: ReplicaConfig::default(),
            pooler: None,
            session_url: None,
            target_session_attrs: None,
            liveness: LivenessConfig::default(),
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use = "a config does nothing until passed to `Database::connect`"]
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = value;
            self
        }
    };
}

impl DatabaseConfig {
    /// A config for a connection URL (`postgresql://user:password@host:port/database?sslmode=…`).
    ///
    /// The URL is parsed by [`validate`](Self::validate); a password in it is kept apart and
    /// never printed.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseConfig {
            url: Some(url.into()),
            ..Default::default()
        }
    }

    /// A config built from host, port, database and user (password via [`password`](Self::password)
    /// or `DB_PASSWORD`).
    pub fn from_parts(
        host: impl Into<String>,
        port: u16,
        database: impl Into<String>,
        user: impl Into<String>,
    ) -> Self {
        DatabaseConfig {
            host: host.into(),
            port,
            database: database.into(),
            user: user.into(),
            ..Default::default()
        }
    }

    /// Sets the password (overrides one in the URL and `DB_PASSWORD`).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    /// Sets the schema that `{{tables.x}}` renders into; created on connect if missing
    /// (see [`create_schema`](Self::create_schema)) and put first on each connection's `search_path`.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        let s = schema.into();
        self.schema = (!s.is_empty()).then_some(s);
        self
    }

    /// Removes the schema: `{{tables.x}}` renders as the bare name.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn no_schema(mut self) -> Self {
        self.schema = None;
        self
    }

    setter!(
        /// Connections opened by `connect` and kept open (default 5).
        min_connections: usize
    );
    setter!(
        /// Upper bound of the pool (default 20).
        max_connections: usize
    );
    setter!(
        /// How long a caller waits for a connection before [`Error::PoolTimeout`] (default 30 s):
        /// for a free one when all are in use, and for the server to come back when it cannot be
        /// reached (a restart, a failover), while one reconnect loop probes it.
        acquire_timeout: Duration
    );
    setter!(
        /// Idle connections above `min_connections` are closed after this long (default 5 min).
        idle_timeout: Option<Duration>
    );
    setter!(
        /// Connections are replaced after this age (default 30 min).
        max_lifetime: Option<Duration>
    );
    setter!(
        /// A connection idle for longer than this is pinged before it is handed out; fresher ones
        /// are handed out without a round trip (default 30 s).
        health_check_after: Duration
    );
    setter!(
        /// Server-side `statement_timeout` (default 60 s; `None` leaves the server's setting).
        statement_timeout: Option<Duration>
    );
    setter!(
        /// Server-side `idle_in_transaction_session_timeout` (default 60 s).
        idle_in_transaction_session_timeout: Option<Duration>
    );
    setter!(
        /// Server-side `lock_timeout` (default 5 s).
        lock_timeout: Option<Duration>
    );
    setter!(
        /// Attempts to open the first connection in `connect` (default 3).
        retry_attempts: u32
    );
    setter!(
        /// Delay before the second attempt (default 1 s).
        retry_delay: Duration
    );
    setter!(
        /// Factor applied to the delay after each failed attempt (default 2.0).
        retry_backoff: f64
    );
    setter!(
        /// Cap on the delay between attempts (default 30 s).
        retry_max_delay: Duration
    );
    setter!(
        /// Queries slower than this log a warning (default 1 s; `None` disables).
        slow_query_threshold: Option<Duration>
    );
    setter!(
        /// Prepared statements cached per connection (default 256).
        statement_cache_capacity: usize
    );
    /// Splits the pool into `lanes` groups of connections; a tenant handle's statements prefer
    /// the connections of the tenant's lane (default: `max_connections / 2`, so lanes of two).
    ///
    /// Each tenant's SQL names its schema, so it is a prepared statement of its own on every
    /// connection that runs it. With lanes a connection sees about `tenants / lanes` tenants:
    /// size [`statement_cache_capacity`](Self::statement_cache_capacity) to hold that share
    /// (tenants × their queries / lanes) and no query pays Parse/Describe/planning again, while
    /// each connection's server memory stays bounded by its share. A caller whose lane is busy
    /// takes a free connection of another lane rather than wait; handles that are not tenant
    /// handles take the first free connection. `1` turns lanes off, which is faster when every
    /// tenant's statements fit in one connection's cache (measured at 100 tenants: 0.93 of one
    /// tenant without lanes, 0.76 with them; see `docs/tenants.md`).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn tenant_lanes(mut self, lanes: usize) -> Self {
        self.tenant_lanes = Some(lanes);
        self
    }

    /// The lanes the pool is split into (see [`tenant_lanes`](Self::tenant_lanes)).
    pub(crate) fn lanes(&self) -> usize {
        self.tenant_lanes
            .unwrap_or(self.max_connections / 2)
            .clamp(1, self.max_connections.max(1))
    }

    setter!(
        /// Rendered SQL texts cached per `Database` handle (default 1024).
        template_cache_capacity: usize
    );
    setter!(
        /// Whether `connect` runs `CREATE SCHEMA IF NOT EXISTS` for the schema (default true).
        create_schema: bool
    );

    /// Sets `application_name` (default `<schema or "app">_pool`, as pgdbm).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// Adds a server setting sent when each connection starts (e.g. `("timezone", "UTC")`).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn server_setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.server_settings.insert(name.into(), value.into());
        self
    }

    /// Adds a SQL command run on every new connection, after the settings.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn init_command(mut self, sql: impl Into<String>) -> Self {
        self.init_commands.push(sql.into());
        self
    }

    /// Sets the TLS mode (default: the URL's `sslmode`, else `prefer` — except for a server on
    /// this machine (loopback address, `localhost`, a socket), where it is `disable`).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.ssl_mode = Some(mode);
        self
    }

    /// CA certificate (PEM) for `verify-ca` / `verify-full`.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn ssl_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssl_root_cert = Some(path.into());
        self
    }

    /// Client certificate and key (PEM) for certificate authentication.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn ssl_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.ssl_client_cert = Some(cert.into());
        self.ssl_client_key = Some(key.into());
        self
    }

    /// The configured schema.
    pub fn get_schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Checks every value and reports the first problem with the setting's name.
    ///
    /// # Errors
    ///
    /// [`Error::Identifier`] when the schema is not a valid identifier, and [`Error::Config`]
    /// naming the setting for any other invalid value: pool sizes, zero timeouts, retry settings, a
    /// missing TLS file, a refused server setting, an unparsable URL or host list, replica and
    /// liveness settings. Nothing is sent to the server.
    pub fn validate(&self) -> Result<()> {
        if let Some(s) = &self.schema {
            validate_identifier(s, IdentifierKind::Schema)?;
        }
        if self.max_connections == 0 {
            return Err(Error::config("max_connections", "must be at least 1"));
        }
        if self.min_connections > self.max_connections {
            return Err(Error::config(
                "min_connections",
                format!(
                    "min_connections ({}) is larger than max_connections ({})",
                    self.min_connections, self.max_connections
                ),
            ));
        }
        if self.acquire_timeout.is_zero() {
            return Err(Error::config(
                "acquire_timeout",
                "must be greater than zero",
            ));
        }
        if self.observe.metrics_interval.is_zero() {
            return Err(Error::config(
                "metrics_interval",
                "must be greater than zero",
            ));
        }
        if self.tenant_lanes == Some(0) {
            return Err(Error::config(
                "tenant_lanes",
                "must be at least 1 (1 turns lanes off)",
            ));
        }
        if self.retry_attempts == 0 {
            return Err(Error::config("retry_attempts", "must be at least 1"));
        }
        if !(self.retry_backoff.is_finite() && self.retry_backoff >= 1.0) {
            return Err(Error::config(
                "retry_backoff",
                "must be a finite number >= 1.0",
            ));
        }
        for (field, path) in [
            ("ssl_ca_file", &self.ssl_root_cert),
            ("ssl_cert_file", &self.ssl_client_cert),
            ("ssl_key_file", &self.ssl_client_key),
        ] {
            if let Some(p) = path
                && !p.is_file()
            {
                return Err(Error::config(
                    field,
                    format!("file `{}` does not exist or is not a file", p.display()),
                ));
            }
        }
        if self.ssl_client_cert.is_some() != self.ssl_client_key.is_some() {
            return Err(Error::config(
                "ssl_cert_file",
                "a client certificate needs both a certificate and a key file",
            ));
        }
        for k in self.server_settings.keys() {
            let lower = k.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "timezone" | "datestyle" | "client_encoding" | "extra_float_digits"
            ) {
                return Err(Error::config(
                    "server_settings",
                    format!(
                        "`{k}` is fixed by the driver at connection start and would be ignored; to change the time zone use init_command(\"SET TIME ZONE '…'\")"
                    ),
                ));
            }
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            {
                return Err(Error::config(
                    "server_settings",
                    format!("`{k}` is not a valid setting name"),
                ));
            }
        }
        self.connect_targets()?;
        self.validate_servers()?;
        self.validate_liveness()?;
        Ok(())
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DatabaseConfig");
        match &self.url {
            Some(u) => d.field("url", &masked_url(u)),
            None => d
                .field("host", &self.host)
                .field("port", &self.port)
                .field("database", &self.database)
                .field("user", &self.user),
        };
        d.field("password", &self.password.as_ref().map(|_| "****"))
            .field("schema", &self.schema)
            .field("min_connections", &self.min_connections)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_deadline", &self.liveness.statement_deadline)
            .field("ssl_mode", &self.ssl_mode)
            .field("retry_attempts", &self.retry_attempts)
            .field("metrics", &self.observe.metrics)
            .field("query_stats", &self.observe.query_stats)
            .field("replicas", &self.replica_targets())
            .field("pgbouncer", &self.pooler)
            .field("session_url", &self.session_url.as_deref().map(masked_url))
            .finish_non_exhaustive()
    }
}

impl fmt::Display for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.url {
            Some(u) => f.write_str(&masked_url(u)),
            None => write!(
                f,
                "postgresql://{}@{}:{}/{}",
                self.user, self.host, self.port, self.database
            ),
        }
    }
}

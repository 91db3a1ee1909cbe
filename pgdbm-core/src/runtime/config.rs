//! `DatabaseConfig`: how to reach the server, how big the pool is, what each connection runs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::error::{Error, Result, redact};
use crate::ident::{IdentifierKind, validate_identifier};

/// TLS mode, as libpq spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it (libpq's default).
    #[default]
    Prefer,
    /// Require TLS, do not verify the certificate.
    Require,
    /// Require TLS and a certificate signed by a trusted CA.
    VerifyCa,
    /// Require TLS, a trusted certificate and a matching host name.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = Error;

    /// Parses `disable | prefer | require | verify-ca | verify-full` (case-insensitive;
    /// `verify_ca` / `verify_full` are accepted too).
    fn from_str(s: &str) -> Result<Self> {
        Ok(
            match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
                "disable" => SslMode::Disable,
                "prefer" => SslMode::Prefer,
                "require" => SslMode::Require,
                "verify-ca" => SslMode::VerifyCa,
                "verify-full" => SslMode::VerifyFull,
                other => {
                    return Err(Error::config(
                        "ssl_mode",
                        format!(
                            "unknown TLS mode `{other}`; use one of disable, prefer, require, verify-ca, verify-full"
                        ),
                    ));
                }
            },
        )
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

impl From<SslMode> for PgSslMode {
    fn from(m: SslMode) -> Self {
        match m {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

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
    pub(crate) connect_timeout: Duration,
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
    pub(crate) template_cache_capacity: usize,
    pub(crate) create_schema: bool,
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
            connect_timeout: Duration::from_secs(10),
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
            template_cache_capacity: 1024,
            create_schema: true,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
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

    /// Reads the configuration from the environment, after loading a `.env` file from the
    /// current directory or its parents (variables already set win over the file).
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `DATABASE_URL` | connection URL; otherwise `DB_HOST`, `DB_PORT`, `DB_NAME`, `DB_USER` |
    /// | `DB_PASSWORD` | password, when the URL has none |
    /// | `DB_SCHEMA` | schema that `{{tables.x}}` renders into |
    /// | `DB_MIN_CONN`, `DB_MAX_CONN` | pool size |
    /// | `DB_ACQUIRE_TIMEOUT_MS`, `DB_STATEMENT_TIMEOUT_MS`, `DB_LOCK_TIMEOUT_MS`, `DB_IDLE_IN_TRANSACTION_TIMEOUT_MS` | timeouts (`0` disables the server-side ones) |
    /// | `DB_APPLICATION_NAME` | `application_name` |
    /// | `DB_SSL_MODE`, `DB_SSL_CA_FILE`, `DB_SSL_CERT_FILE`, `DB_SSL_KEY_FILE` | TLS |
    /// | `DB_SLOW_QUERY_MS` | slow-query warning threshold |
    ///
    /// A malformed value is an error naming the variable.
    pub fn from_env() -> Result<Self> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env) but with an explicit `.env` file; the process
    /// environment still wins over the file. The process environment is not modified.
    pub fn from_env_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let iter = dotenvy::from_path_iter(path).map_err(|e| {
            Error::config("env_file", format!("cannot read `{}`: {e}", path.display()))
        })?;
        let mut file = BTreeMap::new();
        for item in iter {
            let (k, v) = item.map_err(|e| {
                Error::config(
                    "env_file",
                    format!("cannot parse `{}`: {e}", path.display()),
                )
            })?;
            file.insert(k, v);
        }
        Self::from_lookup(|k| std::env::var(k).ok().or_else(|| file.get(k).cloned()))
    }

    /// Builds a config from any variable lookup (the environment, a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let mut c = match get("DATABASE_URL") {
            Some(url) => DatabaseConfig::new(url),
            None => {
                let mut c = DatabaseConfig::default();
                if let Some(h) = get("DB_HOST") {
                    c.host = h;
                }
                if let Some(p) = get("DB_PORT") {
                    c.port = parse_var("DB_PORT", &p)?;
                }
                if let Some(d) = get("DB_NAME") {
                    c.database = d;
                }
                if let Some(u) = get("DB_USER") {
                    c.user = u;
                }
                c
            }
        };
        if let Some(p) = get("DB_PASSWORD") {
            c.password = Some(Secret(p));
        }
        if let Some(s) = get("DB_SCHEMA") {
            c.schema = Some(s);
        }
        if let Some(v) = get("DB_MIN_CONN") {
            c.min_connections = parse_var("DB_MIN_CONN", &v)?;
        }
        if let Some(v) = get("DB_MAX_CONN") {
            c.max_connections = parse_var("DB_MAX_CONN", &v)?;
        }
        if let Some(v) = get("DB_ACQUIRE_TIMEOUT_MS") {
            c.acquire_timeout = Duration::from_millis(parse_var("DB_ACQUIRE_TIMEOUT_MS", &v)?);
        }
        let optional_ms = |name: &str, v: String| -> Result<Option<Duration>> {
            let ms: u64 = parse_var(name, &v)?;
            Ok((ms > 0).then(|| Duration::from_millis(ms)))
        };
        if let Some(v) = get("DB_STATEMENT_TIMEOUT_MS") {
            c.statement_timeout = optional_ms("DB_STATEMENT_TIMEOUT_MS", v)?;
        }
        if let Some(v) = get("DB_LOCK_TIMEOUT_MS") {
            c.lock_timeout = optional_ms("DB_LOCK_TIMEOUT_MS", v)?;
        }
        if let Some(v) = get("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS") {
            c.idle_in_transaction_session_timeout =
                optional_ms("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", v)?;
        }
        if let Some(v) = get("DB_SLOW_QUERY_MS") {
            c.slow_query_threshold = optional_ms("DB_SLOW_QUERY_MS", v)?;
        }
        if let Some(v) = get("DB_APPLICATION_NAME") {
            c.application_name = Some(v);
        }
        if let Some(v) = get("DB_SSL_MODE") {
            c.ssl_mode = Some(v.parse().map_err(|e: Error| match e {
                Error::Config { message, .. } => Error::config("DB_SSL_MODE", message),
                other => other,
            })?);
        }
        if let Some(v) = get("DB_SSL_CA_FILE") {
            c.ssl_root_cert = Some(v.into());
        }
        if let Some(v) = get("DB_SSL_CERT_FILE") {
            c.ssl_client_cert = Some(v.into());
        }
        if let Some(v) = get("DB_SSL_KEY_FILE") {
            c.ssl_client_key = Some(v.into());
        }
        c.validate()?;
        Ok(c)
    }

    /// Sets the password (overrides one in the URL and `DB_PASSWORD`).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    /// Sets the schema that `{{tables.x}}` renders into; created on connect if missing
    /// (see [`create_schema`](Self::create_schema)) and put first on each connection's `search_path`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        let s = schema.into();
        self.schema = (!s.is_empty()).then_some(s);
        self
    }

    /// Removes the schema: `{{tables.x}}` renders as the bare name.
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
        /// How long a caller waits for a free connection before [`Error::PoolTimeout`] (default 30 s).
        acquire_timeout: Duration
    );
    setter!(
        /// How long opening one connection may take (default 10 s).
        connect_timeout: Duration
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
    setter!(
        /// Rendered SQL texts cached per `Database` handle (default 1024).
        template_cache_capacity: usize
    );
    setter!(
        /// Whether `connect` runs `CREATE SCHEMA IF NOT EXISTS` for the schema (default true).
        create_schema: bool
    );

    /// Sets `application_name` (default `<schema or "app">_pool`, as pgdbm).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// Adds a server setting sent when each connection starts (e.g. `("timezone", "UTC")`).
    pub fn server_setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.server_settings.insert(name.into(), value.into());
        self
    }

    /// Adds a SQL command run on every new connection, after the settings.
    pub fn init_command(mut self, sql: impl Into<String>) -> Self {
        self.init_commands.push(sql.into());
        self
    }

    /// Sets the TLS mode (default: the URL's `sslmode`, else `prefer` — except for a server on
    /// this machine (loopback address, `localhost`, a socket), where it is `disable`).
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.ssl_mode = Some(mode);
        self
    }

    /// CA certificate (PEM) for `verify-ca` / `verify-full`.
    pub fn ssl_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssl_root_cert = Some(path.into());
        self
    }

    /// Client certificate and key (PEM) for certificate authentication.
    pub fn ssl_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.ssl_client_cert = Some(cert.into());
        self.ssl_client_key = Some(key.into());
        self
    }

    /// The configured schema.
    pub fn get_schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The TLS mode that will be used.
    pub fn get_ssl_mode(&self) -> Result<SslMode> {
        if let Some(m) = self.ssl_mode {
            return Ok(m);
        }
        Ok(match self.connect_options()?.get_ssl_mode() {
            PgSslMode::Disable => SslMode::Disable,
            PgSslMode::Allow | PgSslMode::Prefer => SslMode::Prefer,
            PgSslMode::Require => SslMode::Require,
            PgSslMode::VerifyCa => SslMode::VerifyCa,
            PgSslMode::VerifyFull => SslMode::VerifyFull,
        })
    }

    /// Host, port and database as `host:port/database`, for messages.
    pub fn target(&self) -> String {
        match self.connect_options() {
            Ok(o) => format!(
                "{}:{}/{}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("")
            ),
            Err(_) => "<invalid url>".into(),
        }
    }

    /// Checks every value and reports the first problem with the setting's name.
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
        self.connect_options()?;
        Ok(())
    }

    fn password_str(&self) -> Option<String> {
        if let Some(p) = &self.password {
            return Some(p.0.clone());
        }
        if let Some(url) = &self.url
            && let Ok(u) = url::Url::parse(url)
            && let Some(p) = u.password()
        {
            return Some(
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned(),
            );
        }
        std::env::var("DB_PASSWORD").ok().filter(|p| !p.is_empty())
    }

    /// The options sqlx uses to open each connection. The password is included here, so this is
    /// crate-private.
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions> {
        let password = self.password_str();
        let mut opts = match &self.url {
            Some(raw) => {
                let url = url::Url::parse(raw).map_err(|e| {
                    Error::config(
                        "url",
                        format!(
                            "not a valid connection URL ({e}); expected postgresql://user:password@host:port/database"
                        ),
                    )
                })?;
                if !matches!(url.scheme(), "postgres" | "postgresql") {
                    return Err(Error::config(
                        "url",
                        format!(
                            "unsupported scheme `{}`; expected postgresql://user:password@host:port/database",
                            url.scheme()
                        ),
                    ));
                }
                PgConnectOptions::from_str(raw).map_err(|e| {
                    Error::config("url", redact(&e.to_string(), password.as_deref()))
                })?
            }
            None => PgConnectOptions::new_without_pgpass()
                .host(&self.host)
                .port(self.port)
                .database(&self.database)
                .username(&self.user),
        };
        if let Some(p) = &password {
            opts = opts.password(p);
        }
        let url_sets_tls = self.url.as_deref().is_some_and(|u| {
            url::Url::parse(u).is_ok_and(|u| u.query_pairs().any(|(k, _)| k == "sslmode"))
        });
        match self.ssl_mode {
            Some(m) => opts = opts.ssl_mode(m.into()),
            // TLS to the same machine protects nothing, and sqlx's TLS handshake costs ~90 ms
            // here (it does not set TCP_NODELAY): `prefer` becomes `disable` on loopback.
            None if !url_sets_tls && is_local(opts.get_host()) => {
                opts = opts.ssl_mode(PgSslMode::Disable)
            }
            None => {}
        }
        if let Some(p) = &self.ssl_root_cert {
            opts = opts.ssl_root_cert(p);
        }
        if let Some(p) = &self.ssl_client_cert {
            opts = opts.ssl_client_cert(p);
        }
        if let Some(p) = &self.ssl_client_key {
            opts = opts.ssl_client_key(p);
        }
        let app = self
            .application_name
            .clone()
            .unwrap_or_else(|| format!("{}_pool", self.schema.as_deref().unwrap_or("app")));
        opts = opts
            .application_name(&app)
            .statement_cache_capacity(self.statement_cache_capacity)
            .options(self.session_settings());
        // Statement logging is ours (spans with the rendered SQL); sqlx's would log twice.
        use sqlx::ConnectOptions;
        Ok(opts.disable_statement_logging())
    }

    /// The settings every connection starts with, sent in the startup packet (no round trip).
    pub(crate) fn session_settings(&self) -> Vec<(String, String)> {
        let mut s: BTreeMap<String, String> = BTreeMap::new();
        s.insert("jit".into(), "off".into());
        let ms = |d: &Duration| d.as_millis().to_string();
        if let Some(d) = &self.statement_timeout {
            s.insert("statement_timeout".into(), ms(d));
        }
        if let Some(d) = &self.idle_in_transaction_session_timeout {
            s.insert("idle_in_transaction_session_timeout".into(), ms(d));
        }
        if let Some(d) = &self.lock_timeout {
            s.insert("lock_timeout".into(), ms(d));
        }
        for (k, v) in &self.server_settings {
            s.insert(k.clone(), v.clone());
        }
        if let Some(schema) = &self.schema {
            // The schema comes first so unqualified names in hand-written SQL resolve there too.
            s.insert("search_path".into(), format!("\"{schema}\", public"));
        }
        s.into_iter().collect()
    }

    /// Host, port, database and user as the connection will use them (for error messages).
    pub(crate) fn endpoint(&self) -> (String, u16, String, String) {
        match self.connect_options() {
            Ok(o) => (
                o.get_host().to_string(),
                o.get_port(),
                o.get_database().unwrap_or("").to_string(),
                o.get_username().to_string(),
            ),
            Err(_) => (
                self.host.clone(),
                self.port,
                self.database.clone(),
                self.user.clone(),
            ),
        }
    }

    pub(crate) fn secret(&self) -> Option<String> {
        self.password_str()
    }
}

/// Loopback addresses, `localhost` and socket directories.
fn is_local(host: &str) -> bool {
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn parse_var<T: FromStr>(name: &str, value: &str) -> Result<T>
where
    T::Err: fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| Error::config(name, format!("`{value}` is not valid here: {e}")))
}

/// The URL with its password replaced by `****`.
fn masked_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("****"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".into(),
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
            .field("ssl_mode", &self.ssl_mode)
            .field("retry_attempts", &self.retry_attempts)
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

/// The serialized form: every field optional, durations in milliseconds (`0` turns an optional
/// timeout off), unknown keys rejected (pgdbm silently ignored them).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    url: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    database: Option<String>,
    user: Option<String>,
    password: Option<String>,
    schema: Option<String>,
    min_connections: Option<usize>,
    max_connections: Option<usize>,
    acquire_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_lifetime_ms: Option<u64>,
    health_check_after_ms: Option<u64>,
    statement_timeout_ms: Option<u64>,
    idle_in_transaction_session_timeout_ms: Option<u64>,
    lock_timeout_ms: Option<u64>,
    application_name: Option<String>,
    #[serde(default)]
    server_settings: BTreeMap<String, String>,
    #[serde(default)]
    init_commands: Vec<String>,
    ssl_mode: Option<String>,
    ssl_ca_file: Option<PathBuf>,
    ssl_cert_file: Option<PathBuf>,
    ssl_key_file: Option<PathBuf>,
    retry_attempts: Option<u32>,
    retry_delay_ms: Option<u64>,
    retry_backoff: Option<f64>,
    retry_max_delay_ms: Option<u64>,
    slow_query_threshold_ms: Option<u64>,
    statement_cache_capacity: Option<usize>,
}

/// Reads a config from any serde format (TOML, JSON, YAML …). Keys are the setter names, with
/// durations as `<name>_ms`; `0` turns an optional timeout off. Unknown keys are an error.
///
/// ```
/// # use pgdbm_core::DatabaseConfig;
/// let c: DatabaseConfig = serde_json::from_str(
///     r#"{"url": "postgresql://app@localhost/db", "schema": "svc", "max_connections": 8, "lock_timeout_ms": 0}"#,
/// ).unwrap();
/// assert_eq!(c.get_schema(), Some("svc"));
/// ```
impl<'de> serde::Deserialize<'de> for DatabaseConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let f = ConfigFile::deserialize(d)?;
        let ms = Duration::from_millis;
        let opt_ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        let mut c = match f.url {
            Some(u) => DatabaseConfig::new(u),
            None => DatabaseConfig::default(),
        };
        if let Some(v) = f.host {
            c.host = v;
        }
        if let Some(v) = f.port {
            c.port = v;
        }
        if let Some(v) = f.database {
            c.database = v;
        }
        if let Some(v) = f.user {
            c.user = v;
        }
        if let Some(v) = f.password {
            c.password = Some(Secret(v));
        }
        if let Some(v) = f.schema {
            c = c.schema(v);
        }
        macro_rules! set {
            ($($field:ident <- $value:expr),* $(,)?) => {$( if let Some(v) = $value { c.$field = v; } )*};
        }
        set!(
            min_connections <- f.min_connections,
            max_connections <- f.max_connections,
            acquire_timeout <- f.acquire_timeout_ms.map(ms),
            connect_timeout <- f.connect_timeout_ms.map(ms),
            idle_timeout <- f.idle_timeout_ms.map(opt_ms),
            max_lifetime <- f.max_lifetime_ms.map(opt_ms),
            health_check_after <- f.health_check_after_ms.map(ms),
            statement_timeout <- f.statement_timeout_ms.map(opt_ms),
            idle_in_transaction_session_timeout <- f.idle_in_transaction_session_timeout_ms.map(opt_ms),
            lock_timeout <- f.lock_timeout_ms.map(opt_ms),
            retry_attempts <- f.retry_attempts,
            retry_delay <- f.retry_delay_ms.map(ms),
            retry_backoff <- f.retry_backoff,
            retry_max_delay <- f.retry_max_delay_ms.map(ms),
            slow_query_threshold <- f.slow_query_threshold_ms.map(opt_ms),
            statement_cache_capacity <- f.statement_cache_capacity,
        );
        c.application_name = f.application_name.or(c.application_name);
        c.server_settings.extend(f.server_settings);
        c.init_commands.extend(f.init_commands);
        if let Some(m) = f.ssl_mode {
            c.ssl_mode = Some(m.parse().map_err(serde::de::Error::custom)?);
        }
        c.ssl_root_cert = f.ssl_ca_file.or(c.ssl_root_cert);
        c.ssl_client_cert = f.ssl_cert_file.or(c.ssl_client_cert);
        c.ssl_client_key = f.ssl_key_file.or(c.ssl_client_key);
        Ok(c)
    }
}

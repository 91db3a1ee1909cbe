//! `DatabaseConfig::from_env` and friends: the environment variables pgdbm reads.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use super::{DatabaseConfig, Secret};
use crate::runtime::error::{Error, Result};

impl DatabaseConfig {
    /// Reads the configuration from the environment, after loading a `.env` file from the
    /// current directory or its parents (variables already set win over the file).
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `DATABASE_URL` | connection URL; otherwise `DB_HOST`, `DB_PORT`, `DB_NAME`, `DB_USER` |
    /// | `DB_PASSWORD` | password, when the URL has none |
    /// | `DB_SCHEMA` | schema that `{{tables.x}}` renders into |
    /// | `DB_MIN_CONN`, `DB_MAX_CONN` | pool size |
    /// | `DB_TENANT_LANES` | lanes the pool is split into for tenant handles |
    /// | `DB_ACQUIRE_TIMEOUT_MS`, `DB_STATEMENT_TIMEOUT_MS`, `DB_LOCK_TIMEOUT_MS`, `DB_IDLE_IN_TRANSACTION_TIMEOUT_MS` | timeouts (`0` disables the server-side ones) |
    /// | `DB_APPLICATION_NAME` | `application_name` |
    /// | `DB_SSL_MODE`, `DB_SSL_CA_FILE`, `DB_SSL_CERT_FILE`, `DB_SSL_KEY_FILE` | TLS |
    /// | `DB_SLOW_QUERY_MS` | slow-query warning threshold |
    /// | `DB_METRICS` | `false` turns the metrics off |
    /// | `DB_POOL_NAME` | the `pool` label of the metrics |
    /// | `DB_QUERY_STATS` | `true` keeps query statistics in the process |
    /// | `DB_QUERY_HISTORY` | how many recent statements they keep |
    /// | `DATABASE_REPLICA_URLS` | read replicas, comma-separated URLs |
    /// | `DB_MAX_REPLICA_LAG_MS` | lag above which a replica is skipped (`0`: any lag) |
    /// | `DB_PGBOUNCER` | `session` or `transaction`: the URL leads to PgBouncer in that mode |
    /// | `DB_SESSION_URL` | a direct URL for sessions (listeners) when the URL leads to a transaction pooler |
    /// | `DB_TARGET_SESSION_ATTRS` | `any` or `read-write`, for a host list |
    /// | `DB_CONNECT_TIMEOUT_MS` | per-host connect deadline |
    /// | `DB_KEEPALIVES` | `false` turns TCP keepalives off |
    /// | `DB_KEEPALIVES_IDLE_MS`, `DB_KEEPALIVES_INTERVAL_MS`, `DB_KEEPALIVES_COUNT` | keepalive timing (whole seconds) |
    /// | `DB_TCP_USER_TIMEOUT_MS` | `TCP_USER_TIMEOUT` (`0`: the system's) |
    /// | `DB_LIVENESS_CHECK_AFTER_MS`, `DB_LIVENESS_TIMEOUT_MS` | the liveness check (`0` turns it off) |
    /// | `DB_STATEMENT_DEADLINE_MS` | client-side deadline per call (`0`: none) |
    ///
    /// A malformed value is an error naming the variable.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable when a value does not parse (a port, a count, a
    /// duration, a boolean, a mode), and the errors of [`validate`](Self::validate) for values that
    /// parse but are not allowed. A missing or unreadable `.env` file is ignored.
    pub fn from_env() -> Result<Self> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env) but with an explicit `.env` file; the process
    /// environment still wins over the file. The process environment is not modified.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (field `env_file`) when `path` cannot be read or parsed, then the errors
    /// of [`from_env`](Self::from_env).
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
    ///
    /// # Errors
    ///
    /// As [`from_env`](Self::from_env): [`Error::Config`] naming the variable for a malformed
    /// value, and the errors of [`validate`](Self::validate).
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
        if let Some(v) = get("DB_TENANT_LANES") {
            c.tenant_lanes = Some(parse_var("DB_TENANT_LANES", &v)?);
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
        if let Some(v) = get("DB_METRICS") {
            c.observe.metrics = parse_bool("DB_METRICS", &v)?;
        }
        if let Some(v) = get("DB_POOL_NAME") {
            c.observe.pool_name = Some(v);
        }
        if let Some(v) = get("DB_QUERY_STATS") {
            c.observe.query_stats = parse_bool("DB_QUERY_STATS", &v)?;
        }
        if let Some(v) = get("DB_QUERY_HISTORY") {
            c.observe.query_history = parse_var("DB_QUERY_HISTORY", &v)?;
        }
        if let Some(v) = get("DATABASE_REPLICA_URLS") {
            c.replicas.urls = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(v) = get("DB_MAX_REPLICA_LAG_MS") {
            c.replicas.max_lag = optional_ms("DB_MAX_REPLICA_LAG_MS", v)?;
        }
        if let Some(v) = get("DB_PGBOUNCER") {
            c.pooler = Some(v.parse().map_err(|e| renamed(e, "DB_PGBOUNCER"))?);
        }
        if let Some(v) = get("DB_SESSION_URL") {
            c.session_url = Some(v);
        }
        if let Some(v) = get("DB_TARGET_SESSION_ATTRS") {
            c.target_session_attrs = Some(
                v.parse()
                    .map_err(|e| renamed(e, "DB_TARGET_SESSION_ATTRS"))?,
            );
        }
        if let Some(v) = get("DB_CONNECT_TIMEOUT_MS") {
            let ms: u64 = parse_var("DB_CONNECT_TIMEOUT_MS", &v)?;
            c = c.connect_timeout(Duration::from_millis(ms));
        }
        if let Some(v) = get("DB_KEEPALIVES") {
            c = c.keepalives(parse_bool("DB_KEEPALIVES", &v)?);
        }
        if let Some(v) = get("DB_KEEPALIVES_IDLE_MS") {
            let ms: u64 = parse_var("DB_KEEPALIVES_IDLE_MS", &v)?;
            c = c.keepalives_idle(Duration::from_millis(ms));
        }
        if let Some(v) = get("DB_KEEPALIVES_INTERVAL_MS") {
            let ms: u64 = parse_var("DB_KEEPALIVES_INTERVAL_MS", &v)?;
            c = c.keepalives_interval(Duration::from_millis(ms));
        }
        if let Some(v) = get("DB_KEEPALIVES_COUNT") {
            c = c.keepalives_count(parse_var("DB_KEEPALIVES_COUNT", &v)?);
        }
        if let Some(v) = get("DB_TCP_USER_TIMEOUT_MS") {
            c = c.tcp_user_timeout(optional_ms("DB_TCP_USER_TIMEOUT_MS", v)?);
        }
        if let Some(v) = get("DB_LIVENESS_CHECK_AFTER_MS") {
            c = c.liveness_check_after(optional_ms("DB_LIVENESS_CHECK_AFTER_MS", v)?);
        }
        if let Some(v) = get("DB_LIVENESS_TIMEOUT_MS") {
            let ms: u64 = parse_var("DB_LIVENESS_TIMEOUT_MS", &v)?;
            c = c.liveness_timeout(Duration::from_millis(ms));
        }
        if let Some(v) = get("DB_STATEMENT_DEADLINE_MS") {
            c = c.statement_deadline(optional_ms("DB_STATEMENT_DEADLINE_MS", v)?);
        }
        if let Some(v) = get("DB_APPLICATION_NAME") {
            c.application_name = Some(v);
        }
        if let Some(v) = get("DB_SSL_MODE") {
            c.ssl_mode = Some(v.parse().map_err(|e| renamed(e, "DB_SSL_MODE"))?);
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
}

/// A parse error reported under the variable's name.
fn renamed(e: Error, variable: &str) -> Error {
    match e {
        Error::Config { message, .. } => Error::config(variable, message),
        other => other,
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::config(
            name,
            format!("`{value}` is not a boolean; use true or false"),
        )),
    }
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

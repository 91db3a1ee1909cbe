//! `DatabaseConfig` from serde formats (TOML, JSON, YAML …).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{DatabaseConfig, Secret};

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
    tenant_lanes: Option<usize>,
    #[serde(default)]
    replicas: Vec<String>,
    max_replica_lag_ms: Option<u64>,
    replica_check_interval_ms: Option<u64>,
    pgbouncer: Option<String>,
    session_url: Option<String>,
    target_session_attrs: Option<String>,
    keepalives: Option<bool>,
    keepalives_idle_ms: Option<u64>,
    keepalives_interval_ms: Option<u64>,
    keepalives_count: Option<u32>,
    tcp_user_timeout_ms: Option<u64>,
    liveness_check_after_ms: Option<u64>,
    liveness_timeout_ms: Option<u64>,
    statement_deadline_ms: Option<u64>,
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
///
/// let c: DatabaseConfig = serde_json::from_str(
///     r#"{"url": "postgresql://app@pgbouncer:6432/db", "pgbouncer": "transaction",
///         "replicas": ["postgresql://app@replica-1/db"], "max_replica_lag_ms": 2000}"#,
/// ).unwrap();
/// assert_eq!(c.get_pooler(), Some(pgdbm_core::PoolerMode::Transaction));
/// assert_eq!(c.replica_targets(), ["postgresql://app@replica-1/db"]);
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
        c.tenant_lanes = f.tenant_lanes.or(c.tenant_lanes);
        c.application_name = f.application_name.or(c.application_name);
        c.server_settings.extend(f.server_settings);
        c.init_commands.extend(f.init_commands);
        if let Some(m) = f.ssl_mode {
            c.ssl_mode = Some(m.parse().map_err(serde::de::Error::custom)?);
        }
        c.ssl_root_cert = f.ssl_ca_file.or(c.ssl_root_cert);
        c.ssl_client_cert = f.ssl_cert_file.or(c.ssl_client_cert);
        c.ssl_client_key = f.ssl_key_file.or(c.ssl_client_key);
        c.replicas.urls.extend(f.replicas);
        if let Some(v) = f.max_replica_lag_ms {
            c.replicas.max_lag = opt_ms(v);
        }
        if let Some(v) = f.replica_check_interval_ms {
            c.replicas.check_interval = ms(v);
        }
        if let Some(v) = f.connect_timeout_ms {
            c = c.connect_timeout(ms(v));
        }
        if let Some(v) = f.keepalives {
            c = c.keepalives(v);
        }
        if let Some(v) = f.keepalives_idle_ms {
            c = c.keepalives_idle(ms(v));
        }
        if let Some(v) = f.keepalives_interval_ms {
            c = c.keepalives_interval(ms(v));
        }
        if let Some(v) = f.keepalives_count {
            c = c.keepalives_count(v);
        }
        if let Some(v) = f.tcp_user_timeout_ms {
            c = c.tcp_user_timeout(opt_ms(v));
        }
        if let Some(v) = f.liveness_check_after_ms {
            c = c.liveness_check_after(opt_ms(v));
        }
        if let Some(v) = f.liveness_timeout_ms {
            c = c.liveness_timeout(ms(v));
        }
        if let Some(v) = f.statement_deadline_ms {
            c = c.statement_deadline(opt_ms(v));
        }
        if let Some(m) = f.pgbouncer {
            c.pooler = Some(m.parse().map_err(serde::de::Error::custom)?);
        }
        if let Some(u) = f.session_url {
            c.session_url = Some(u);
        }
        if let Some(a) = f.target_session_attrs {
            c.target_session_attrs = Some(a.parse().map_err(serde::de::Error::custom)?);
        }
        Ok(c)
    }
}

//! More than one server: a libpq-style host list with `target_session_attrs`, read replicas, and
//! PgBouncer in front.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::DatabaseConfig;
use super::liveness::UrlLiveness;
use crate::runtime::error::{Error, Result};

/// Which server of a host list a connection may use (libpq's `target_session_attrs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetSessionAttrs {
    /// The first host that accepts the connection (libpq's default).
    #[default]
    Any,
    /// The first host whose sessions can write (`transaction_read_only` is off): the primary.
    /// After a failover, new connections find the promoted server by themselves.
    ReadWrite,
}

impl FromStr for TargetSessionAttrs {
    type Err = Error;

    /// `any`, `read-write` or `primary` (treated as `read-write`: both mean the server that
    /// takes writes).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "any" => Ok(TargetSessionAttrs::Any),
            "read-write" | "primary" => Ok(TargetSessionAttrs::ReadWrite),
            other => Err(Error::config(
                "target_session_attrs",
                format!(
                    "`{other}` is not supported; use any or read-write (primary); for reads from standbys, list them as replicas"
                ),
            )),
        }
    }
}

/// How PgBouncer (or another pooler) in front of the server hands out server connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolerMode {
    /// `pool_mode = session`: a client keeps one server connection while it is connected.
    /// Only the startup packet differs from a direct connection (PgBouncer refuses the
    /// `options` and `extra_float_digits` parameters sqlx sends), so the settings are `SET`
    /// after connecting instead.
    Session,
    /// `pool_mode = transaction`: a client holds a server connection only inside a
    /// transaction. Each statement of a `Database` method, of `tsql!`/`sqlx::query!` through
    /// `&Database` and of `&mut PoolConnection` then runs in a transaction of its own, with
    /// unnamed statements and the settings as `SET LOCAL`; see the README, "More than one
    /// server".
    Transaction,
}

impl FromStr for PoolerMode {
    type Err = Error;

    /// `session` or `transaction`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "session" => Ok(PoolerMode::Session),
            "transaction" => Ok(PoolerMode::Transaction),
            other => Err(Error::config(
                "pgbouncer",
                format!(
                    "`{other}` is not a pool mode pgdbm supports; use session or transaction (PgBouncer's statement mode allows no transactions)"
                ),
            )),
        }
    }
}

impl fmt::Display for PoolerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolerMode::Session => "session",
            PoolerMode::Transaction => "transaction",
        })
    }
}

/// Replica settings of a [`DatabaseConfig`]. No `Debug`: the URLs may hold passwords.
#[derive(Clone)]
pub(crate) struct ReplicaConfig {
    /// Each replica's URL (passwords are masked wherever they are shown).
    pub(crate) urls: Vec<String>,
    pub(crate) max_lag: Option<Duration>,
    pub(crate) check_interval: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            urls: Vec::new(),
            max_lag: Some(Duration::from_secs(10)),
            check_interval: Duration::from_secs(1),
        }
    }
}

impl DatabaseConfig {
    /// Adds a read replica (a streaming standby), reached with [`Database::replica`]: it gets a
    /// pool of its own, sized like the primary's, with the same settings and schema.
    ///
    /// A replica that cannot be reached, or lags more than
    /// [`max_replica_lag`](Self::max_replica_lag), is skipped (reads go to the primary, with one
    /// WARN) until a health check finds it usable again.
    ///
    /// [`Database::replica`]: crate::Database::replica
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn replica(mut self, url: impl Into<String>) -> Self {
        self.replicas.urls.push(url.into());
        self
    }

    /// Replaces the replica list (see [`replica`](Self::replica)).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn replicas<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.replicas.urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// How far behind the primary a replica may be and still serve reads (default 10 s;
    /// `None`: any lag). Measured on the replica as the age of the last replayed transaction
    /// while WAL it has received is still unreplayed (an idle primary is not lag).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn max_replica_lag(mut self, lag: Option<Duration>) -> Self {
        self.replicas.max_lag = lag;
        self
    }

    /// How often each replica's reachability and lag are checked (default 1 s).
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn replica_check_interval(mut self, every: Duration) -> Self {
        self.replicas.check_interval = every;
        self
    }

    /// Says that the URL leads to PgBouncer (or another pooler) in `mode`; see [`PoolerMode`].
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn pgbouncer(mut self, mode: PoolerMode) -> Self {
        self.pooler = Some(mode);
        self
    }

    /// Which host of a host list connections use; overrides the URL's
    /// `target_session_attrs`. With one host, [`TargetSessionAttrs::ReadWrite`] still refuses
    /// a read-only server.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn target_session_attrs(mut self, attrs: TargetSessionAttrs) -> Self {
        self.target_session_attrs = Some(attrs);
        self
    }

    /// The pooler mode set with [`pgbouncer`](Self::pgbouncer).
    pub fn get_pooler(&self) -> Option<PoolerMode> {
        self.pooler
    }

    /// A direct URL (to PostgreSQL, or to a pooler in session mode) for what needs a session
    /// of its own: a [`Listener`](crate::Listener). LISTEN keeps state on the server
    /// connection, which a transaction pooler hands to other clients after each transaction,
    /// so behind [`PoolerMode::Transaction`] a listener needs this URL. Its password is kept
    /// apart and never printed; without one in it, the main URL's password is used.
    /// Also `DB_SESSION_URL` and the serde key `session_url`.
    #[must_use = "a config does nothing until passed to `Database::connect`"]
    pub fn session_url(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.session_url = (!url.trim().is_empty()).then_some(url);
        self
    }

    /// The URL set with [`session_url`](Self::session_url), its password masked.
    pub fn get_session_url(&self) -> Option<String> {
        self.session_url.as_deref().map(super::mask::masked_url)
    }

    /// The config of a dedicated session (a listener): the session URL when there is one, as
    /// a direct connection; else this config, unless it leads to a transaction pooler, where a
    /// session's LISTEN would be lost after its first transaction.
    pub(crate) fn for_sessions(&self) -> Result<DatabaseConfig> {
        let Some(url) = &self.session_url else {
            if self.pooler == Some(PoolerMode::Transaction) {
                return Err(Error::config(
                    "session_url",
                    "a listener needs a session of its own, and the URL leads to PgBouncer in transaction mode, which hands the server connection to other clients after each transaction (LISTEN would silently stop hearing anything); set session_url (DB_SESSION_URL) to a direct URL to PostgreSQL or to a pooler in session mode",
                ));
            }
            return Ok(self.clone());
        };
        let mut c = self.for_replica(url);
        c.pooler = None;
        c.target_session_attrs = self.target_session_attrs;
        c.observe.pool_name = self.observe.pool_name.clone();
        Ok(c)
    }

    /// The replica URLs, passwords masked.
    pub fn replica_targets(&self) -> Vec<String> {
        self.replicas
            .urls
            .iter()
            .map(|u| super::mask::masked_url(u))
            .collect()
    }

    /// Whether statements must each run in a transaction of their own (transaction pooling).
    pub(crate) fn wraps_statements(&self) -> bool {
        self.pooler == Some(PoolerMode::Transaction)
    }

    /// The config of one replica's pool: this one with the replica's URL, no replicas of its
    /// own, no schema creation (a standby is read-only) and the primary's password unless the
    /// replica URL has one.
    pub(crate) fn for_replica(&self, url: &str) -> DatabaseConfig {
        let mut c = self.clone();
        c.url = Some(url.to_string());
        c.replicas.urls.clear();
        c.create_schema = false;
        // Opened on demand: its health check keeps a connection of its own.
        c.min_connections = 0;
        c.target_session_attrs = Some(TargetSessionAttrs::Any);
        if url::Url::parse(url).is_ok_and(|u| u.password().is_some()) {
            c.password = None;
        } else if c.password.is_none() {
            c.password = self.password_str().map(super::Secret);
        }
        if c.observe.pool_name.is_none() {
            c.observe.pool_name = Some(format!("replica {}", super::mask::masked_url(url)));
        }
        c
    }

    /// Checks the settings of this module.
    pub(crate) fn validate_servers(&self) -> Result<()> {
        if self.replicas.check_interval.is_zero() {
            return Err(Error::config(
                "replica_check_interval",
                "must be greater than zero",
            ));
        }
        for url in &self.replicas.urls {
            self.for_replica(url)
                .connect_targets()
                .map_err(|e| match e {
                    Error::Config { message, .. } => Error::config(
                        "replicas",
                        format!("replica `{}`: {message}", super::mask::masked_url(url)),
                    ),
                    other => other,
                })?;
        }
        if let Some(url) = &self.session_url {
            self.for_replica(url)
                .connect_targets()
                .map_err(|e| match e {
                    Error::Config { message, .. } => Error::config(
                        "session_url",
                        format!("`{}`: {message}", super::mask::masked_url(url)),
                    ),
                    other => other,
                })?;
        }
        if self.wraps_statements() && !self.init_commands.is_empty() {
            return Err(Error::config(
                "init_commands",
                "init commands set session state, which PgBouncer's transaction mode does not keep (the next transaction may run on another server connection); use server_setting(…) (sent as SET LOCAL in each transaction) or set them on the role with ALTER ROLE … SET",
            ));
        }
        Ok(())
    }
}

/// The libpq parameters of a URL that sqlx does not know, taken out of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct UrlParams {
    pub(crate) target_session_attrs: Option<TargetSessionAttrs>,
    pub(crate) liveness: UrlLiveness,
}

/// A connection URL split into one URL per host of its host list
/// (`postgresql://u@h1:5432,h2:5433/db?…`), and the libpq parameters sqlx does not know
/// (`target_session_attrs`, the keepalives, `tcp_user_timeout`, `connect_timeout`), taken out
/// of the URLs.
pub(crate) fn split_hosts(raw: &str) -> Result<(Vec<String>, UrlParams)> {
    let bad = |why: &str| {
        Error::config(
            "url",
            format!("{why}; expected postgresql://user:password@host:port[,host2:port2…]/database"),
        )
    };
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Ok((vec![raw.to_string()], UrlParams::default()));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let mut params = UrlParams::default();
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("target_session_attrs", v)) => params.target_session_attrs = Some(v.parse()?),
            Some((k, v)) if params.liveness.take(k, v)? => {}
            _ if pair.is_empty() => {}
            _ => kept.push(pair),
        }
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    let list: Vec<&str> = hosts.split(',').collect();
    if list.len() > 1 && list.iter().any(|h| h.trim().is_empty()) {
        return Err(bad("the host list has an empty entry"));
    }
    let urls = list
        .iter()
        .map(|h| format!("{scheme}://{userinfo}{}{path}{query}", h.trim()))
        .collect();
    Ok((urls, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_is_left_as_it_is() {
        let (urls, params) = split_hosts("postgresql://u:p@h:5432/db?sslmode=disable").unwrap();
        assert_eq!(urls, ["postgresql://u:p@h:5432/db?sslmode=disable"]);
        assert_eq!(params, UrlParams::default());
    }

    #[test]
    fn a_host_list_becomes_one_url_per_host() {
        let (urls, attrs) = split_hosts(
            "postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write&sslmode=disable",
        )
        .unwrap();
        assert_eq!(
            urls,
            [
                "postgresql://u:p@h1:5432/db?sslmode=disable",
                "postgresql://u:p@h2:5433/db?sslmode=disable"
            ]
        );
        assert_eq!(
            attrs.target_session_attrs,
            Some(TargetSessionAttrs::ReadWrite)
        );
    }

    #[test]
    fn hosts_without_user_or_path_and_ipv6() {
        let (urls, _) = split_hosts("postgres://[::1]:5432,10.0.0.2").unwrap();
        assert_eq!(urls, ["postgres://[::1]:5432", "postgres://10.0.0.2"]);
    }

    #[test]
    fn bad_lists_and_attrs_are_errors_that_say_what_to_do() {
        let e = split_hosts("postgresql://h1,,h2/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty entry"), "{e}");
        let e = split_hosts("postgresql://h1,h2/db?target_session_attrs=standby")
            .unwrap_err()
            .to_string();
        assert!(e.contains("any or read-write"), "{e}");
    }

    #[test]
    fn pooler_modes_parse() {
        assert_eq!(
            "Transaction".parse::<PoolerMode>().unwrap(),
            PoolerMode::Transaction
        );
        let e = "statement".parse::<PoolerMode>().unwrap_err().to_string();
        assert!(e.contains("session or transaction"), "{e}");
    }
}

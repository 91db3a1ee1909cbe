//! From a `DatabaseConfig` to sqlx's connect options: URL, password, TLS, session settings.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::{DatabaseConfig, PoolerMode, TargetSessionAttrs};
use crate::runtime::error::{Error, Result, redact};

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

impl DatabaseConfig {
    /// The TLS mode that will be used.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) (field `url`) when no mode was set and the URL
    /// cannot be parsed.
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

    /// The name of the database connections use (of the first host of a host list).
    pub fn get_database(&self) -> String {
        self.endpoint().2
    }

    /// Host, port and database as `host:port/database`, for messages.
    pub fn target(&self) -> String {
        match self.connect_targets() {
            Ok(all) => {
                let hosts: Vec<String> = all
                    .iter()
                    .map(|o| format!("{}:{}", o.get_host(), o.get_port()))
                    .collect();
                format!(
                    "{}/{}",
                    hosts.join(","),
                    all[0].get_database().unwrap_or("")
                )
            }
            Err(_) => "<invalid url>".into(),
        }
    }

    pub(super) fn password_str(&self) -> Option<String> {
        if let Some(p) = &self.password {
            return Some(p.0.clone());
        }
        if let Some(url) = &self.url
            && let Ok((urls, _)) = super::split_hosts(url)
            && let Ok(u) = url::Url::parse(&urls[0])
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

    /// The options sqlx uses to open each connection (to the first host of a host list). The
    /// password is included here, so this is crate-private.
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions> {
        let mut all = self.connect_targets()?;
        Ok(all.swap_remove(0))
    }

    /// The libpq parameters of the URL that sqlx does not know (none without a URL).
    pub(crate) fn url_params(&self) -> Result<super::servers::UrlParams> {
        match &self.url {
            Some(raw) => Ok(super::split_hosts(raw)?.1),
            None => Ok(Default::default()),
        }
    }

    /// The options for each host of the URL's host list, in order (one for a single host).
    pub(crate) fn connect_targets(&self) -> Result<Vec<PgConnectOptions>> {
        match &self.url {
            Some(raw) => {
                let (urls, _) = super::split_hosts(raw)?;
                urls.iter().map(|u| self.options_for(Some(u))).collect()
            }
            None => Ok(vec![self.options_for(None)?]),
        }
    }

    /// Which host of the list connections may use: the config's setting, else the URL's
    /// `target_session_attrs`, else any.
    pub(crate) fn session_attrs(&self) -> TargetSessionAttrs {
        if let Some(a) = self.target_session_attrs {
            return a;
        }
        self.url
            .as_deref()
            .and_then(|u| super::split_hosts(u).ok())
            .and_then(|(_, p)| p.target_session_attrs)
            .unwrap_or_default()
    }

    fn options_for(&self, url: Option<&str>) -> Result<PgConnectOptions> {
        let password = self.password_str();
        let mut opts = match url {
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
        let url_sets_tls = url.is_some_and(|u| {
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
        opts = opts.application_name(&app);
        opts = match self.pooler {
            None => opts
                .statement_cache_capacity(self.statement_cache_capacity)
                .options(self.session_settings()),
            // PgBouncer refuses both startup parameters ("unsupported startup parameter"); the
            // settings are SET after connecting (session) or SET LOCAL per transaction.
            Some(mode) => {
                let cache = match mode {
                    PoolerMode::Session => self.statement_cache_capacity,
                    // Statements run unnamed (see `PoolShared::persistent`); nothing to cache.
                    PoolerMode::Transaction => 0,
                };
                opts.statement_cache_capacity(cache)
                    .extra_float_digits(None)
            }
        };
        // Statement logging is ours (spans with the rendered SQL); sqlx's would log twice.
        use sqlx::ConnectOptions;
        Ok(opts.disable_statement_logging())
    }

    /// SQL that applies the session settings on a connection that could not send them at
    /// startup (behind a pooler): `set_config` calls, session-wide or (`local`) for the current
    /// transaction only. `None` without settings.
    pub(crate) fn settings_sql(&self, local: bool) -> Option<String> {
        let calls: Vec<String> = self
            .session_settings()
            .iter()
            .map(|(k, v)| {
                format!(
                    "set_config('{}', '{}', {local})",
                    k.replace('\'', "''"),
                    v.replace('\'', "''")
                )
            })
            .collect();
        (!calls.is_empty()).then(|| format!("SELECT {}", calls.join(", ")))
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
pub(super) fn is_local(host: &str) -> bool {
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

//! Environments: the connection URL the way pgdbm (Python) builds it, and a `Debug` that never
//! shows a password.

use std::fmt;

use super::{Environment, ProjectError};

impl Environment {
    /// The connection URL, built like pgdbm (Python)'s `get_connection_string`: `url`, else
    /// `connection_string`, else `postgresql://user:password@host:port/database` from the parts
    /// (user, password and database percent-encoded; user and password only if given).
    ///
    /// A `url` or `connection_string` that is exactly `"${VAR}"` is the environment variable
    /// `VAR` (as in Python; `${…}` inside a longer string is kept as written). Where Python
    /// would silently fall through to the next source when `VAR` is unset or empty, this is
    /// [`ProjectError::UnsetVariable`], since a deployment that forgot `DATABASE_URL` should not
    /// connect somewhere else.
    ///
    /// # Errors
    ///
    /// [`ProjectError::UnsetVariable`] when `url` or `connection_string` is `"${VAR}"` and `VAR` is
    /// unset or empty, and [`ProjectError::NoConnection`] when the environment gives neither a URL
    /// nor both `host` and `database`.
    pub fn resolve_url(&self) -> Result<String, ProjectError> {
        self.resolve_url_with(|name| std::env::var(name).ok())
    }

    /// [`resolve_url`](Self::resolve_url) with variables looked up by `var` instead of in the
    /// process environment.
    ///
    /// # Errors
    ///
    /// As [`resolve_url`](Self::resolve_url), with `var` deciding whether a variable is set.
    pub fn resolve_url_with(
        &self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<String, ProjectError> {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        for (key, value) in [
            ("url", &self.url),
            ("connection_string", &self.connection_string),
        ] {
            let Some(value) = given(value) else { continue };
            return match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                None => Ok(value),
                Some(name) => {
                    var(name)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| ProjectError::UnsetVariable {
                            environment: self.name.clone(),
                            key,
                            variable: name.to_string(),
                        })
                }
            };
        }
        let (Some(host), Some(database)) = (given(&self.host), given(&self.database)) else {
            return Err(ProjectError::NoConnection {
                environment: self.name.clone(),
            });
        };
        let mut auth = String::new();
        if let Some(user) = given(&self.user) {
            auth = encode(&user);
            if let Some(password) = given(&self.password) {
                auth.push(':');
                auth.push_str(&encode(&password));
            }
            auth.push('@');
        }
        Ok(format!(
            "postgresql://{auth}{host}:{}/{}",
            self.port,
            encode(&database)
        ))
    }
}

/// Python's `urllib.parse.quote(s, safe="")`: everything but `A-Za-z0-9_.-~` as `%XX`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` with any password replaced by `****`: the one in a URL's `user:password@`, and every
/// `password=…` (a URL query parameter or a `key=value` connection string). Errs towards
/// masking too much.
pub(super) fn mask(s: &str) -> String {
    let mut out = s.to_string();
    if let Some(i) = out.find("://") {
        let start = i + 3;
        if let Some(at) = out[start..].rfind('@')
            && let Some(colon) = out[start..start + at].find(':')
        {
            out.replace_range(start + colon + 1..start + at, "****");
        }
    }
    let mut from = 0;
    while let Some(p) = out[from..].to_ascii_lowercase().find("password=") {
        let value = from + p + "password=".len();
        let rest = &out[value..];
        let len = match rest.strip_prefix('\'') {
            Some(quoted) => quoted.find('\'').map_or(rest.len(), |e| e + 2),
            None => rest
                .find(|c: char| c.is_whitespace() || c == '&')
                .unwrap_or(rest.len()),
        };
        out.replace_range(value..value + len, "****");
        from = value + 4;
    }
    out
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environment")
            .field("name", &self.name)
            .field("url", &self.url.as_deref().map(mask))
            .field(
                "connection_string",
                &self.connection_string.as_deref().map(mask),
            )
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "****"))
            .field("schema", &self.schema)
            .field("ssl_enabled", &self.ssl_enabled)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_ca_file", &self.ssl_ca_file)
            .field("ssl_cert_file", &self.ssl_cert_file)
            .field("ssl_key_file", &self.ssl_key_file)
            .finish()
    }
}

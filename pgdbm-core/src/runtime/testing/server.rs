//! Finding a PostgreSQL server for tests, or starting a throwaway one.
//!
//! Order: `PGDBM_TEST_DATABASE_URL`; then, where the machine has a RAM file system and the
//! PostgreSQL binaries, the in-memory [`ThrowawayServer`] (in `/dev/shm`; a test database there is
//! made in a fraction of the time a disk takes); then `DATABASE_URL`, a server on localhost:5432
//! (TCP, then the usual socket directories), and otherwise the throwaway server on disk under
//! `target/` (or `$PGDBM_TEST_SERVER_DIR`). The throwaway server is reused by later runs and
//! every test binary, and stops by itself when idle.

use std::path::{Path, PathBuf};

use crate::runtime::error::{Error, Result};
use crate::runtime::local_server::{self, ThrowawayServer, probe};

/// Where the test server came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerSource {
    /// `PGDBM_TEST_DATABASE_URL`.
    TestUrl,
    /// `DATABASE_URL`.
    DatabaseUrl,
    /// A server already listening on localhost.
    Localhost,
    /// A throwaway server started (or found running) in this directory.
    Throwaway(PathBuf),
}

/// A server tests can create databases on.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TestServer {
    /// URL of its maintenance database (`…/postgres`); tests create their databases from here.
    pub admin_url: String,
    /// How it was found.
    pub source: ServerSource,
}

/// How to look for a server. [`ServerDiscovery::from_env`] is what tests use; the fields exist so
/// each step can be pointed elsewhere (or at nothing) in pgdbm's own tests.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerDiscovery {
    /// Value of `PGDBM_TEST_DATABASE_URL`.
    pub test_url: Option<String>,
    /// Value of `DATABASE_URL`.
    pub database_url: Option<String>,
    /// Localhost port to probe (`None`: skip the probe).
    pub localhost_port: Option<u16>,
    /// Socket directories to probe.
    pub socket_dirs: Vec<PathBuf>,
    /// Directories to search for `initdb` and `pg_ctl` (after `PATH`, unless `search_path` is false).
    pub bin_dirs: Vec<PathBuf>,
    /// Whether to search `PATH` for the binaries.
    pub search_path: bool,
    /// Where the throwaway server keeps its data (`None`: never start one).
    pub throwaway_dir: Option<PathBuf>,
    /// Try the throwaway server before `DATABASE_URL` and localhost (set when it lives in
    /// memory).
    pub prefer_throwaway: bool,
}

impl ServerDiscovery {
    /// The default search, from the environment.
    pub fn from_env() -> ServerDiscovery {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        ServerDiscovery {
            test_url: env("PGDBM_TEST_DATABASE_URL"),
            database_url: env("DATABASE_URL"),
            localhost_port: Some(5432),
            socket_dirs: vec!["/var/run/postgresql".into(), "/tmp".into()],
            bin_dirs: local_server::postgres_bin_dirs(),
            search_path: true,
            throwaway_dir: Some(ThrowawayServer::default_root()),
            prefer_throwaway: ThrowawayServer::new(ThrowawayServer::default_root()).in_memory(),
        }
    }

    /// Finds (or starts) a server, or says exactly what was tried.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (field `test_server`) when every step fails, listing each place tried and
    /// why, and how to make a server available. A URL from the environment is taken as it is,
    /// without connecting.
    pub async fn find(&self) -> Result<TestServer> {
        let mut tried = Vec::new();
        if let Some(url) = &self.test_url {
            return Ok(TestServer {
                admin_url: url.clone(),
                source: ServerSource::TestUrl,
            });
        }
        tried.push("PGDBM_TEST_DATABASE_URL: not set".to_string());
        if self.prefer_throwaway {
            match self.throwaway(&mut tried).await {
                Some(server) => {
                    if self.database_url.is_some() {
                        tracing::info!(
                            "pgdbm: test databases go to the in-memory throwaway server, not DATABASE_URL's; set PGDBM_TEST_DATABASE_URL to choose the server"
                        );
                    }
                    return Ok(server);
                }
                None => tried.push("(then the servers below)".into()),
            }
        }
        if let Some(url) = &self.database_url {
            return Ok(TestServer {
                admin_url: admin_url_of(url),
                source: ServerSource::DatabaseUrl,
            });
        }
        tried.push("DATABASE_URL: not set".to_string());
        let user = std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into());
        if let Some(port) = self.localhost_port {
            let url = format!("postgresql://{user}@127.0.0.1:{port}/postgres");
            match probe(&url).await {
                Ok(()) => {
                    return Ok(TestServer {
                        admin_url: url,
                        source: ServerSource::Localhost,
                    });
                }
                Err(e) => tried.push(format!("127.0.0.1:{port} as `{user}`: {e}")),
            }
            for dir in &self.socket_dirs {
                if !dir.join(format!(".s.PGSQL.{port}")).exists() {
                    tried.push(format!("socket {}/.s.PGSQL.{port}: none", dir.display()));
                    continue;
                }
                let url = format!(
                    "postgresql://{user}@localhost:{port}/postgres?host={}",
                    dir.display()
                );
                match probe(&url).await {
                    Ok(()) => {
                        return Ok(TestServer {
                            admin_url: url,
                            source: ServerSource::Localhost,
                        });
                    }
                    Err(e) => tried.push(format!("socket in {}: {e}", dir.display())),
                }
            }
        }
        if !self.prefer_throwaway
            && let Some(server) = self.throwaway(&mut tried).await
        {
            return Ok(server);
        }
        Err(Error::config(
            "test_server",
            format!(
                "no PostgreSQL server for tests. Tried, in order:\n  - {}\nTo fix: set PGDBM_TEST_DATABASE_URL (or DATABASE_URL) to a server where the user may CREATE DATABASE, start the local server (e.g. `pg_ctlcluster 15 main start`), or install PostgreSQL (`apt-get install postgresql`) so a throwaway server can be started",
                tried.join("\n  - ")
            ),
        ))
    }

    /// The throwaway server, started or found running; what went wrong goes to `tried`.
    async fn throwaway(&self, tried: &mut Vec<String>) -> Option<TestServer> {
        match &self.throwaway_dir {
            None => tried.push("throwaway server: disabled".into()),
            Some(dir) => match self.binaries() {
                None => tried.push(format!(
                    "throwaway server: no initdb and pg_ctl found on PATH or in {}",
                    if self.bin_dirs.is_empty() {
                        "/usr/lib/postgresql/*/bin".to_string()
                    } else {
                        self.bin_dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )),
                Some(bin) => match ThrowawayServer::new(dir).start_or_reuse(&bin).await {
                    Ok(url) => {
                        return Some(TestServer {
                            admin_url: url,
                            source: ServerSource::Throwaway(dir.clone()),
                        });
                    }
                    Err(e) => tried.push(format!("throwaway server in {}: {e}", dir.display())),
                },
            },
        }
        None
    }

    /// The directory holding `initdb` and `pg_ctl`.
    fn binaries(&self) -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if self.search_path
            && let Some(path) = std::env::var_os("PATH")
        {
            dirs.extend(std::env::split_paths(&path));
        }
        dirs.extend(self.bin_dirs.iter().cloned());
        dirs.into_iter().find(|d| local_server::has_binaries(d))
    }
}

/// The same server's `postgres` database.
pub(crate) fn admin_url_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_path("/postgres");
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// Stops a throwaway server started in `root` (for tests of this module and for cleanup); see
/// [`ThrowawayServer::stop`].
///
/// # Errors
///
/// As [`ThrowawayServer::stop`]: [`Error::Config`] (field `local_server`) when `root` cannot be
/// locked or `pg_ctl` fails.
pub fn stop_throwaway(bin_dir: &Path, root: &Path) -> Result<()> {
    ThrowawayServer::new(root).stop(bin_dir).map(|_| ())
}

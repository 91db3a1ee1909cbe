//! The throwaway server: one shared, reused PostgreSQL for tests and the command line.

use std::path::{Path, PathBuf};

use sqlx::Connection;

use super::{LocalCluster, admin_url, connect, fail, probe};
use crate::runtime::error::Result;

/// The environment variable that moves the throwaway server to another directory (see
/// [`ThrowawayServer::default_root`]).
pub const THROWAWAY_DIR_ENV: &str = "PGDBM_TEST_SERVER_DIR";

/// The throwaway server: a [`LocalCluster`] in a directory of its own (`root`), started on a spare
/// port when first needed and left running, so later test runs, other test binaries and other
/// commands reuse it.
///
/// `root` holds `data/` (the cluster), `server.log`, `port` (the port it was last started on) and
/// `lock` (held while it is being started or stopped, so concurrent callers start it once).
///
/// ```no_run
/// # async fn demo() -> pgdbm_core::Result<()> {
/// use pgdbm_core::local_server::{ThrowawayServer, find_binaries};
/// let server = ThrowawayServer::new(ThrowawayServer::default_root());
/// let bin = find_binaries().expect("initdb and pg_ctl installed");
/// let admin_url = server.start_or_reuse(&bin).await?; // postgresql://postgres@127.0.0.1:PORT/postgres
/// assert_eq!(server.url().await, Some(admin_url));
/// server.stop(&bin)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrowawayServer {
    root: PathBuf,
}

impl ThrowawayServer {
    /// The throwaway server kept in `root` (nothing is created or started yet).
    pub fn new(root: impl Into<PathBuf>) -> ThrowawayServer {
        ThrowawayServer { root: root.into() }
    }

    /// Where the test support keeps its throwaway server, in this order: `$PGDBM_TEST_SERVER_DIR`
    /// ([`THROWAWAY_DIR_ENV`]); `$CARGO_TARGET_DIR/pgdbm-test-server`; `pgdbm-test-server` in the
    /// cargo target directory holding the running executable (a test binary, or `pgdbm` built in
    /// the workspace); `target/pgdbm-test-server` in the current directory or the nearest parent
    /// with a cargo target directory; else `pgdbm-test-server` in the system's temporary directory.
    pub fn default_root() -> PathBuf {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(dir) = env(THROWAWAY_DIR_ENV) {
            return PathBuf::from(dir);
        }
        if let Some(dir) = env("CARGO_TARGET_DIR") {
            return PathBuf::from(dir).join("pgdbm-test-server");
        }
        // Cargo marks its target directory with CACHEDIR.TAG.
        if let Ok(exe) = std::env::current_exe() {
            for dir in exe.ancestors().skip(1) {
                if dir.join("CACHEDIR.TAG").is_file() {
                    return dir.join("pgdbm-test-server");
                }
            }
        }
        if let Ok(cwd) = std::env::current_dir() {
            for dir in cwd.ancestors() {
                if dir.join("target").join("CACHEDIR.TAG").is_file() {
                    return dir.join("target").join("pgdbm-test-server");
                }
            }
        }
        std::env::temp_dir().join("pgdbm-test-server")
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cluster's data directory (`root/data`).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server log (`root/server.log`).
    pub fn log(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// Starts the server with the binaries in `bin` (`initdb` first if `root` holds no cluster),
    /// or finds it running; returns the URL of its `postgres` database
    /// (`postgresql://postgres@127.0.0.1:PORT/postgres`).
    ///
    /// Concurrent callers (parallel test binaries) serialise on a file lock in `root`, so exactly
    /// one starts the server and the others reuse it.
    pub async fn start_or_reuse(&self, bin: &Path) -> Result<String> {
        let root = &self.root;
        std::fs::create_dir_all(root)
            .map_err(|e| fail(format!("cannot create {}: {e}", root.display())))?;
        let _lock = self.lock()?;
        if let Some((port, _)) = self.status().await {
            return Ok(admin_url(port));
        }
        let mut cluster = LocalCluster::init(bin, root)?;
        cluster.start()?;
        let port = cluster.port();
        std::fs::write(self.port_file(), port.to_string())
            .map_err(|e| fail(format!("cannot write {}: {e}", self.port_file().display())))?;
        tracing::info!(dir = %root.display(), port, "pgdbm: started a throwaway PostgreSQL for tests");
        probe(&admin_url(port)).await.map_err(fail)?;
        Ok(admin_url(port))
    }

    /// Stops the server (`pg_ctl stop -m fast`, with the binaries in `bin`) and waits until it is
    /// down. `Ok(false)`: it was not running (or `root` holds no cluster); nothing was done.
    pub fn stop(&self, bin: &Path) -> Result<bool> {
        if !self.data_dir().join("PG_VERSION").is_file() {
            return Ok(false);
        }
        let _lock = self.lock()?;
        let cluster = LocalCluster {
            bin: bin.to_path_buf(),
            root: self.root.clone(),
            port: 0,
        };
        let running = cluster.pg_ctl_status()?;
        if running {
            cluster.stop("fast")?;
        }
        let _ = std::fs::remove_file(self.port_file());
        Ok(running)
    }

    /// `Some((port, data directory))` when the server runs and answers: the port is read from
    /// the cluster's `postmaster.pid`, and the server listening there must report this data
    /// directory as its own.
    pub async fn status(&self) -> Option<(u16, PathBuf)> {
        let data = self.data_dir();
        let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
        // postmaster.pid: pid, data directory, start time, port, socket directory, …
        let port: u16 = pid_file.lines().nth(3)?.trim().parse().ok()?;
        let mut conn = connect(&admin_url(port)).await.ok()?;
        let theirs: std::result::Result<String, _> = sqlx::query_scalar("SHOW data_directory")
            .fetch_one(&mut conn)
            .await;
        let _ = conn.close().await;
        let same = match (
            std::fs::canonicalize(theirs.ok()?),
            std::fs::canonicalize(&data),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        same.then_some((port, data))
    }

    /// The URL of its `postgres` database when it runs (see [`status`](Self::status)).
    pub async fn url(&self) -> Option<String> {
        self.status().await.map(|(port, _)| admin_url(port))
    }

    fn port_file(&self) -> PathBuf {
        self.root.join("port")
    }

    /// Holds `root/lock` until the returned file is dropped.
    fn lock(&self) -> Result<std::fs::File> {
        let path = self.root.join("lock");
        let lock = std::fs::File::create(&path)
            .map_err(|e| fail(format!("cannot create {}: {e}", path.display())))?;
        lock.lock()
            .map_err(|e| fail(format!("cannot lock {}: {e}", path.display())))?;
        Ok(lock)
    }
}


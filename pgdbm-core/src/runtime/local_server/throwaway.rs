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
    /// ([`THROWAWAY_DIR_ENV`]); in memory, `/dev/shm/pgdbm-test-server-<uid>`, where the machine
    /// has that RAM file system (Linux); `$CARGO_TARGET_DIR/pgdbm-test-server`; `pgdbm-test-server` in the
    /// cargo target directory holding the running executable (a test binary, or `pgdbm` built in
    /// the workspace); `target/pgdbm-test-server` in the current directory or the nearest parent
    /// with a cargo target directory; else `pgdbm-test-server` in the system's temporary directory.
    pub fn default_root() -> PathBuf {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(dir) = env(THROWAWAY_DIR_ENV) {
            return PathBuf::from(dir);
        }
        // A test database is written once and thrown away: its place is memory. One server per
        // user, shared by every project and test binary of that user.
        let shm = Path::new(RAM_DIR);
        if shm.is_dir()
            && std::fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly())
            && let Some(uid) = current_uid()
        {
            return shm.join(format!("pgdbm-test-server-{uid}"));
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

    /// Whether its directory is on the RAM file system (`/dev/shm`).
    pub fn in_memory(&self) -> bool {
        self.root.starts_with(RAM_DIR)
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
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) (field `local_server`) when `root` cannot be created
    /// or locked, `initdb` or `pg_ctl start` fails even on a cluster made anew, or the started
    /// server does not answer a connection.
    pub async fn start_or_reuse(&self, bin: &Path) -> Result<String> {
        let root = &self.root;
        std::fs::create_dir_all(root)
            .map_err(|e| fail(format!("cannot create {}: {e}", root.display())))?;
        let _lock = self.lock()?;
        // Every use counts as activity for the idle shutdown (see `idle_watcher`).
        self.touch();
        if let Some((port, _)) = self.status().await {
            self.ensure_watcher(bin);
            return Ok(admin_url(port));
        }
        // Not answering: never started, stopped (idle, or by hand), or crashed. A crashed
        // server's stale postmaster.pid is recognised by PostgreSQL; a cluster that will not
        // start at all is made anew, since nothing in it is worth keeping.
        let mut cluster = LocalCluster::init(bin, root)?;
        if let Err(e) = cluster.start() {
            tracing::warn!(dir = %root.display(), error = %e, "pgdbm: the throwaway server would not start; making it anew");
            let _ = cluster.stop("immediate");
            std::fs::remove_dir_all(self.data_dir())
                .map_err(|e| fail(format!("cannot remove {}: {e}", self.data_dir().display())))?;
            cluster = LocalCluster::init(bin, root)?;
            cluster.start()?;
        }
        let port = cluster.port();
        std::fs::write(self.port_file(), port.to_string())
            .map_err(|e| fail(format!("cannot write {}: {e}", self.port_file().display())))?;
        probe(&admin_url(port)).await.map_err(fail)?;
        self.ensure_watcher(bin);
        tracing::info!(
            dir = %root.display(),
            port,
            storage = if self.in_memory() { "memory (/dev/shm)" } else { "disk (no RAM file system here)" },
            idle_stop_secs = idle_secs(),
            "pgdbm: started the throwaway PostgreSQL for tests"
        );
        Ok(admin_url(port))
    }

    /// Marks the server as used now.
    fn touch(&self) {
        let _ = std::fs::write(self.root.join("last_used"), b"");
    }

    /// Starts the process that stops the server after it has been idle for
    /// [`IDLE_ENV`] seconds, unless one is running already.
    fn ensure_watcher(&self, bin: &Path) {
        let pid_file = self.root.join("watcher.pid");
        let alive = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.contains("pgdbm-idle-watcher"))
            });
        if alive {
            return;
        }
        match spawn_watcher(&self.root, bin) {
            Ok(pid) => {
                let _ = std::fs::write(&pid_file, pid.to_string());
            }
            Err(e) => {
                tracing::warn!(error = %e, "pgdbm: cannot start the idle watcher of the throwaway server; it will run until stopped (`pgdbm test-server stop`)")
            }
        }
    }

    /// Stops the server (`pg_ctl stop -m fast`, with the binaries in `bin`) and waits until it is
    /// down. `Ok(false)`: it was not running (or `root` holds no cluster); nothing was done.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) (field `local_server`) when `root` cannot be locked
    /// or `pg_ctl status` / `pg_ctl stop` fails.
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

/// Where the machine's RAM file system is mounted (Linux).
const RAM_DIR: &str = "/dev/shm";

/// The environment variable with the idle time, in seconds, after which the throwaway server
/// stops by itself (default 900). Read when the server starts.
pub const IDLE_ENV: &str = "PGDBM_TEST_SERVER_IDLE_SECS";

fn idle_secs() -> u64 {
    std::env::var(IDLE_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(900)
        .max(1)
}

fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// `psql` of the same installation as `bin`'s `pg_ctl` (which may be a symlink, as in
/// `/usr/local/bin`), else the one on `PATH`.
fn psql(bin: &Path) -> String {
    let real = std::fs::canonicalize(bin.join("pg_ctl"))
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("psql")))
        .filter(|p| p.is_file());
    match real.or_else(|| Some(bin.join("psql")).filter(|p| p.is_file())) {
        Some(p) => format!("'{}'", p.display().to_string().replace('\'', "'\\''")),
        None => "psql".into(),
    }
}

/// A detached shell loop (it outlives the process that starts it): every few seconds it asks the
/// server how many client sessions it has; any session counts as use. When the server has been
/// unused for the idle time, it stops it under the same file lock `start_or_reuse` takes, checking
/// again inside the lock, so a caller that has just been handed the URL is never cut off. It
/// exits when the server is gone, whoever stopped it.
fn spawn_watcher(root: &Path, bin: &Path) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let idle = idle_secs();
    let every = (idle / 3).clamp(1, 30);
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let pg_ctl = match super::server_user() {
        Some(u) => format!("runuser -u {u} -- {}", q(&bin.join("pg_ctl"))),
        None => q(&bin.join("pg_ctl")),
    };
    let root_q = q(root);
    let script = format!(
        r#"root={root_q}; idle={idle}
idle_for() {{ last=$(stat -c %Y "$root/last_used" 2>/dev/null || echo 0); echo $(( $(date +%s) - last )); }}
while sleep {every}; do
  port=$(sed -n 4p "$root/data/postmaster.pid" 2>/dev/null) || exit 0
  [ -n "$port" ] || exit 0
  n=$({psql} -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()" 2>/dev/null) || exit 0
  if [ "$n" != 0 ]; then touch "$root/last_used"; continue; fi
  if [ "$(idle_for)" -ge "$idle" ]; then
    flock "$root/lock" sh -c 'if [ "$(( $(date +%s) - $(stat -c %Y "$1/last_used" 2>/dev/null || echo 0) ))" -ge "$2" ]; then '"{pg_ctl}"' stop -D "$1/data" -m fast -w >/dev/null 2>&1; fi' sh "$root" "$idle"
  fi
done"#,
        psql = psql(bin),
    );
    // Kept beside the server, so what runs can be read (and run by hand).
    std::fs::write(root.join("watcher.sh"), &script)?;
    let log = std::fs::File::create(root.join("watcher.log"))?;
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("pgdbm-idle-watcher")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()?;
    Ok(child.id())
}

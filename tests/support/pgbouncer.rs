//! A private PgBouncer in front of a test's server: its own directory and spare port, stopped
//! (killed) and deleted on drop.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";
const PSQL: &str = "/usr/bin/psql";

/// A running `pgbouncer` process that forwards every database name to the same name upstream.
pub struct PgBouncer {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl PgBouncer {
    /// A PgBouncer on 127.0.0.1 (spare port) in front of the server on 127.0.0.1:`upstream_port`,
    /// with `pool_mode` (`transaction` or `session`) and `default_pool_size` server connections
    /// per database and user.
    pub fn start(upstream_port: u16, pool_mode: &str, default_pool_size: u32) -> PgBouncer {
        Self::start_with(upstream_port, pool_mode, default_pool_size, &[])
    }

    /// As [`PgBouncer::start`], with `extra_ini_lines` appended to the `[pgbouncer]` section
    /// (e.g. `ignore_startup_parameters = extra_float_digits`).
    pub fn start_with(
        upstream_port: u16,
        pool_mode: &str,
        default_pool_size: u32,
        extra_ini_lines: &[&str],
    ) -> PgBouncer {
        super::packages::ensure("pgbouncer", "pgbouncer");
        let dir = fresh_dir();
        let mut last = String::new();
        // A spare port may be taken between choosing and binding it: retry with another.
        for _ in 0..3 {
            let port = spare_port();
            let ini = ini(
                &dir,
                port,
                upstream_port,
                pool_mode,
                default_pool_size,
                extra_ini_lines,
            );
            std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
            let _ = std::fs::remove_file(dir.join("pgbouncer.log"));
            let mut bouncer = PgBouncer {
                child: spawn(&dir),
                dir: dir.clone(),
                port,
            };
            match bouncer.wait_listening() {
                Ok(()) => return bouncer,
                Err(e) => {
                    last = e;
                    // Drop would delete the directory the next attempt reuses.
                    let _ = bouncer.child.kill();
                    let _ = bouncer.child.wait();
                    std::mem::forget(bouncer);
                    if !last.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("pgbouncer in {}: {last}", dir.display())
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgresql://postgres@127.0.0.1:PORT/DATABASE`, through this bouncer.
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The directory holding `pgbouncer.ini`, `pgbouncer.log` and `pgbouncer.pid`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `command` (e.g. `SHOW POOLS`) on the admin console with psql; panics on failure;
    /// returns the trimmed unaligned, tuples-only output (`|`-separated columns).
    pub fn admin(&self, command: &str) -> String {
        let out = Command::new(PSQL)
            .args([
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "pgbouncer",
            ])
            .args(["-p", &self.port.to_string(), "-c", command])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {PSQL}: {e}"));
        if !out.status.success() {
            panic!(
                "pgbouncer admin {command:?} failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The last 20 lines of `pgbouncer.log`.
    pub fn log_tail(&self) -> String {
        let path = self.dir.join("pgbouncer.log");
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- {} ---\n{}",
            path.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    /// Waits up to 10 s until the port accepts a TCP connection; the error carries the log tail.
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited ({status})\n{}", self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not listening on port {} after 10 s\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // The child is pgbouncer itself (no runuser in between), so this leaves no process.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ini(
    dir: &Path,
    port: u16,
    upstream_port: u16,
    pool_mode: &str,
    default_pool_size: u32,
    extra: &[&str],
) -> String {
    let dir = dir.display();
    let mut ini = format!(
        "[databases]\n\
         * = host=127.0.0.1 port={upstream_port} user=postgres\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = any\n\
         admin_users = postgres\n\
         pool_mode = {pool_mode}\n\
         default_pool_size = {default_pool_size}\n\
         max_client_conn = 1000\n\
         logfile = {dir}/pgbouncer.log\n\
         pidfile = {dir}/pgbouncer.pid\n"
    );
    for line in extra {
        ini.push_str(line);
        ini.push('\n');
    }
    ini
}

/// `pgbouncer DIR/pgbouncer.ini` in the foreground, its output in `DIR/stdout.log`. PgBouncer
/// refuses to run as root: then it runs as `postgres`, which owns `dir`.
fn spawn(dir: &Path) -> Child {
    let out = std::fs::File::create(dir.join("stdout.log")).unwrap();
    let mut cmd = Command::new(PGBOUNCER);
    cmd.arg(dir.join("pgbouncer.ini"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    if let Some((uid, gid)) = unprivileged_user() {
        // Switching user in the child itself (rather than through runuser) keeps `Child` the
        // pgbouncer process, so killing it cannot orphan one.
        chown_r(dir, uid, gid);
        cmd.uid(uid).gid(gid);
    }
    cmd.spawn().unwrap_or_else(|e| {
        // Nothing runs in `dir` yet: take it along rather than leave it behind.
        let _ = std::fs::remove_dir_all(dir);
        panic!("cannot run {PGBOUNCER}: {e}")
    })
}

/// `postgres`'s uid and gid when we are root; `None` otherwise.
fn unprivileged_user() -> Option<(u32, u32)> {
    if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == "postgres")
        .unwrap_or_else(|| panic!("running as root, and there is no user postgres"));
    Some((entry[2].parse().unwrap(), entry[3].parse().unwrap()))
}

fn chown_r(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_r(&entry.unwrap().path(), uid, gid);
        }
    }
}

/// A fresh directory of its own under `/dev/shm` (which `postgres` can reach even when the
/// target directory is under a private home), else under the tests' temporary directory.
fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR"))
    };
    let dir = base.join(format!("pgdbm-pgbouncer-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spare_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

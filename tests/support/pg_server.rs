//! A private, throwaway PostgreSQL server that tests may stop, restart and kill at will.
//!
//! It never touches the shared server on 127.0.0.1:5432: every [`PgServer`] runs `initdb` into a
//! fresh directory (under `/dev/shm` when available) and listens on its own spare TCP port.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgdbm::testing::LocalCluster;

const BIN: &str = "/usr/lib/postgresql/15/bin";
const PSQL: &str = "/usr/bin/psql";

/// A PostgreSQL server owned by one test; stopped and deleted on drop.
pub struct PgServer {
    dir: PathBuf,
    cluster: LocalCluster,
}

impl PgServer {
    /// Initialises a fresh cluster and starts it on a spare port, waiting until it accepts
    /// connections.
    pub fn start() -> PgServer {
        Self::start_with(&[])
    }

    /// As [`PgServer::start`], with what streaming replicas need: full page writes (which
    /// `pg_basebackup` wants), WAL kept for a replica that falls behind, and feedback from hot
    /// standbys.
    pub fn start_primary() -> PgServer {
        Self::start_with(&[
            ("full_page_writes", "on"),
            ("wal_keep_size", "256MB"),
            ("hot_standby_feedback", "on"),
        ])
    }

    /// A streaming replica of `primary` (a base backup into a directory of its own), started on
    /// a spare port; returns once it accepts connections and is in recovery.
    pub fn start_replica_of(primary: &PgServer) -> PgServer {
        let dir = fresh_dir();
        let started = primary.cluster.base_backup(&dir).and_then(|mut cluster| {
            cluster.start()?;
            Ok(cluster)
        });
        let cluster = started.unwrap_or_else(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "replica of port {} in {}: {e}",
                primary.port(),
                dir.display()
            )
        });
        // From here on, drop stops and deletes the replica even if it never gets ready.
        let replica = PgServer { dir, cluster };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match replica.try_psql("postgres", "SELECT pg_is_in_recovery()") {
                Ok(r) if r == "t" => return replica,
                r if Instant::now() > deadline => {
                    panic!("replica on port {}: not in recovery: {r:?}", replica.port())
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn start_with(settings: &[(&str, &str)]) -> PgServer {
        let dir = fresh_dir();
        let started = LocalCluster::init(Path::new(BIN), &dir).and_then(|mut cluster| {
            for (name, value) in settings {
                cluster.setting(name, value)?;
            }
            cluster.start()?;
            Ok(cluster)
        });
        let cluster = started.unwrap_or_else(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("private PostgreSQL in {}: {e}", dir.display())
        });
        PgServer { dir, cluster }
    }

    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    pub fn url(&self, database: &str) -> String {
        self.cluster.url(database)
    }

    pub fn create_database(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")),
        );
    }

    /// Runs `sql` with psql in `database`; panics (with psql's stderr) on failure; returns the
    /// trimmed unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} in {database} failed: {e}"))
    }

    /// As [`PgServer::psql`], but returns psql's stderr as the error instead of panicking.
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        psql_at(self.port(), database, sql, 10)
    }

    /// `pg_ctl stop -m <mode> -w` (`smart`, `fast` or `immediate`); panics on failure.
    pub fn stop(&self, mode: &str) {
        self.cluster.stop(mode).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the stopped server again, with the same options and port.
    pub fn start_again(&self) {
        self.cluster.start_again().unwrap_or_else(|e| panic!("{e}"));
    }

    /// `pg_ctl restart -m fast -w` with the same options and port; returns how long it took.
    pub fn restart_fast(&self) -> Duration {
        let t = Instant::now();
        self.cluster
            .restart("fast")
            .unwrap_or_else(|e| panic!("{e}"));
        t.elapsed()
    }

    /// `pg_ctl promote -w` on this replica; returns how long it took.
    pub fn promote(&self) -> Duration {
        let t = Instant::now();
        self.cluster.promote().unwrap_or_else(|e| panic!("{e}"));
        t.elapsed()
    }

    /// Waits until this replica has replayed all WAL `primary` had written when called; panics
    /// after 30 s.
    pub fn wait_replayed(&self, primary: &PgServer) {
        let target = primary.psql("postgres", "SELECT pg_current_wal_lsn()");
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.try_psql("postgres", &sql) {
                Ok(r) if r == "t" => return,
                r if Instant::now() > deadline => {
                    let at = self.try_psql("postgres", "SELECT pg_last_wal_replay_lsn()");
                    panic!(
                        "replica on port {} has not replayed up to {target} within 30 s \
                         (at {at:?}; last answer {r:?})",
                        self.port()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The postmaster's process id (from `postmaster.pid`).
    pub fn postmaster_pid(&self) -> i32 {
        let pid_file = self.cluster.data().join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no pid in {text:?}", pid_file.display()))
    }

    /// Terminates every client backend connected to `database` (except psql's own); returns how
    /// many were terminated.
    pub fn terminate_backends(&self, database: &str) -> usize {
        let sql = format!(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            database.replace('\'', "''")
        );
        let n = self.psql("postgres", &sql);
        n.parse()
            .unwrap_or_else(|e| panic!("terminate_backends: {n:?}: {e}"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.cluster.is_running() {
            let _ = self.cluster.stop("immediate");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A directory of its own for a new server, under `/dev/shm` when there is one.
fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("pgdbm-faults-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `sql` with psql as `postgres` on the server at 127.0.0.1:`port`, giving up connecting
/// after `connect_timeout_secs`: the trimmed unaligned, tuples-only output, or psql's status and
/// output as the error.
pub fn psql_at(
    port: u16,
    database: &str,
    sql: &str,
    connect_timeout_secs: u32,
) -> Result<String, String> {
    let out = Command::new(PSQL)
        .args([
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &port.to_string(), "-d", database, "-c", sql])
        .env("PGCONNECT_TIMEOUT", connect_timeout_secs.to_string())
        .output()
        .map_err(|e| format!("cannot run {PSQL}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(output_text(&out))
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

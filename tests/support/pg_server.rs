//! A private, throwaway PostgreSQL server that tests may stop, restart and kill at will.
//!
//! It never touches the shared server on 127.0.0.1:5432: every [`PgServer`] runs `initdb` into a
//! fresh directory (under `/dev/shm` when available) and listens on its own spare TCP port.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgdbm::local_server::LocalCluster;

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
        let started = LocalCluster::init(Path::new(BIN), &dir).and_then(|mut cluster| {
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
            .args(["-p", &self.port().to_string(), "-d", database, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {PSQL}: {e}"));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(output_text(&out))
        }
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

fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

//! A private, throwaway PostgreSQL server that tests may stop, restart and kill at will.
//!
//! It never touches the shared server on 127.0.0.1:5432: every [`PgServer`] runs `initdb` into a
//! fresh directory (under `/dev/shm` when available) and listens on its own spare TCP port.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = "/usr/lib/postgresql/15/bin";
const PSQL: &str = "/usr/bin/psql";

/// A PostgreSQL server owned by one test; stopped and deleted on drop.
pub struct PgServer {
    dir: PathBuf,
    port: u16,
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
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // Built before anything can fail, so that a panic below still cleans up on drop.
        let mut server = PgServer { dir, port: 0 };
        if run_as_postgres() {
            check(
                Command::new("chown")
                    .arg("-R")
                    .arg("postgres:")
                    .arg(&server.dir),
                "chown",
            );
        }
        let mut initdb = pg_command("initdb");
        initdb
            .arg("-D")
            .arg(server.data())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .arg("--no-instructions");
        check(&mut initdb, "initdb");
        // A port picked by binding :0 can in principle be taken before the server binds it.
        for attempt in 1..=3 {
            server.port = spare_port();
            let out = server.pg_ctl("start", &[]);
            if out.status.success() {
                return server;
            }
            let log = server.log_tail();
            if attempt == 3 || !log.contains("could not bind") {
                panic!("pg_ctl start failed: {}\n{log}", output_text(&out));
            }
        }
        unreachable!()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
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
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
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
        self.pg_ctl_ok("stop", &["-m", mode]);
    }

    /// Starts the stopped server again, with the same options and port.
    pub fn start_again(&self) {
        self.pg_ctl_ok("start", &[]);
    }

    /// `pg_ctl restart -m fast -w` with the same options and port; returns how long it took.
    pub fn restart_fast(&self) -> Duration {
        let t = Instant::now();
        self.pg_ctl_ok("restart", &["-m", "fast"]);
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

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- server.log ({}) ---\n{tail}",
            self.dir.join("server.log").display()
        )
    }

    /// `pg_ctl <action> -D <data> -w [extra]`, with the server options for start and restart.
    fn pg_ctl(&self, action: &str, extra: &[&str]) -> Output {
        let mut cmd = pg_command("pg_ctl");
        cmd.arg(action)
            .arg("-D")
            .arg(self.data())
            .arg("-w")
            .args(extra);
        if action != "stop" {
            cmd.arg("-l")
                .arg(self.dir.join("server.log"))
                .arg("-o")
                .arg(format!(
                    "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=100",
                    self.port
                ));
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"))
    }

    fn pg_ctl_ok(&self, action: &str, extra: &[&str]) {
        let out = self.pg_ctl(action, extra);
        if !out.status.success() {
            panic!(
                "pg_ctl {action} {extra:?} failed: {}\n{}",
                output_text(&out),
                self.log_tail()
            );
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = self.pg_ctl("stop", &["-m", "immediate"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PostgreSQL refuses to run as root, so as root its programs run as `postgres`.
fn run_as_postgres() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    })
}

fn pg_command(program: &str) -> Command {
    let program = Path::new(BIN).join(program);
    if run_as_postgres() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn check(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", output_text(&out));
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn spare_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

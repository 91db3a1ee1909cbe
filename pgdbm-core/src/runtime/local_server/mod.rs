//! A PostgreSQL cluster of our own, run from the installed binaries (`initdb`, `pg_ctl`):
//! [`ThrowawayServer`], the server the test support (and `pgdbm test-server`, `pgdbm prepare`)
//! starts when no other is found, and [`LocalCluster`], which also runs the private servers of
//! tests that stop, restart and kill one.

mod replica;
mod throwaway;

pub use throwaway::{IDLE_ENV, THROWAWAY_DIR_ENV, ThrowawayServer};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::runtime::error::{Error, Result};

/// The first directory holding both `initdb` and `pg_ctl`: on `PATH`, then in
/// [`postgres_bin_dirs`].
pub fn find_binaries() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(postgres_bin_dirs());
    dirs.into_iter().find(|d| has_binaries(d))
}

/// `/usr/lib/postgresql/*/bin` (where Debian and Ubuntu install PostgreSQL), newest version
/// first.
pub fn postgres_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    // Newest version first (numerically: 9 < 15).
    dirs.sort_by_key(|d| {
        let version = d
            .parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
        std::cmp::Reverse((version, d.clone()))
    });
    dirs
}

/// Whether `dir` holds `initdb` and `pg_ctl`.
pub(crate) fn has_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// `postgresql://postgres@127.0.0.1:PORT/postgres`.
fn admin_url(port: u16) -> String {
    format!("postgresql://postgres@127.0.0.1:{port}/postgres")
}

/// One connection to `url`, given up after 3 s.
async fn connect(url: &str) -> std::result::Result<sqlx::PgConnection, String> {
    let opts: PgConnectOptions = crate::runtime::config::DatabaseConfig::new(url)
        .connect_options()
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(3), opts.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string().lines().next().unwrap_or("").to_string()),
        Err(_) => Err("no answer within 3 s".into()),
    }
}

/// Whether a server answers at `url` (the reason when not: the first line of the error).
pub(crate) async fn probe(url: &str) -> std::result::Result<(), String> {
    let c = connect(url).await?;
    let _ = c.close().await;
    Ok(())
}

/// A cluster in `root/data`, logging to `root/server.log`, listening on 127.0.0.1 only (no Unix
/// socket), with settings made for tests (no fsync, up to 200 connections) and any given with
/// [`setting`](Self::setting), which override them.
#[derive(Clone, Debug)]
pub struct LocalCluster {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
}

impl LocalCluster {
    /// The cluster in `root`, created with `initdb` if `root/data` holds none. As root, the
    /// server runs as `postgres` (PostgreSQL refuses root), which then owns `root`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (field `local_server`) when `root` cannot be created or handed to the
    /// server user, or `initdb` fails (its output in the message).
    pub fn init(bin: &Path, root: &Path) -> Result<LocalCluster> {
        std::fs::create_dir_all(root)
            .map_err(|e| fail(format!("cannot create {}: {e}", root.display())))?;
        let cluster = LocalCluster {
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            port: 0,
        };
        if let Some(u) = server_user() {
            run(Command::new("chown").arg("-R").arg(u).arg(root)).map_err(fail)?;
        }
        if !cluster.data().join("PG_VERSION").is_file() {
            let _ = std::fs::remove_dir_all(cluster.data());
            run(cluster
                .command("initdb")
                .arg("-D")
                .arg(cluster.data())
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ]))
            .map_err(fail)?;
        }
        Ok(cluster)
    }

    /// Sets the server setting `name` to `value` for every later start (a `-c name=value`
    /// after the defaults, so it wins over them: e.g. `full_page_writes` = `on`, which
    /// `pg_basebackup` wants). Setting a name again replaces its value.
    ///
    /// The settings are kept in `root/settings` rather than in this value, so every
    /// `LocalCluster` of the same `root` starts the server alike.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (field `local_server`) when `name` is not a setting name (ASCII letters,
    /// digits, `_`, `.`), `value` spans lines, or `root/settings` cannot be written.
    pub fn setting(&mut self, name: &str, value: &str) -> Result<()> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !valid {
            return Err(fail(format!("invalid setting name {name:?}")));
        }
        if value.contains(['\n', '\r']) {
            return Err(fail(format!("setting {name}: a value cannot span lines")));
        }
        let mut settings = self.settings();
        settings.retain(|(n, _)| n != name);
        settings.push((name.to_string(), value.to_string()));
        self.write_settings(&settings)
    }

    /// The settings given with [`setting`](Self::setting), in the order they are applied.
    pub fn settings(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.settings_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn settings_file(&self) -> PathBuf {
        self.root.join("settings")
    }

    fn write_settings(&self, settings: &[(String, String)]) -> Result<()> {
        let text: String = settings.iter().map(|(n, v)| format!("{n}={v}\n")).collect();
        let file = self.settings_file();
        std::fs::write(&file, text)
            .map_err(|e| fail(format!("cannot write {}: {e}", file.display())))
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server log.
    pub fn log(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The port it listens on (0 before [`start`](Self::start)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgresql://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server on a spare port and waits until it accepts connections (a port taken
    /// between choosing and binding it is retried).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (field `local_server`) when no spare port is found or `pg_ctl start` fails
    /// (the message ends with the server log's last lines), after three tries when the port was
    /// taken meanwhile.
    pub fn start(&mut self) -> Result<()> {
        let mut last = String::new();
        for _ in 0..3 {
            self.port = spare_port()?;
            match self.pg_ctl("start", &[]) {
                Ok(()) => return Ok(()),
                Err(e) if e.to_string().contains("could not bind") => last = e.to_string(),
                Err(e) => return Err(e),
            }
        }
        Err(fail(last))
    }

    /// Starts the stopped server again on the same port.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (field `local_server`) when `pg_ctl start` fails, with the server log's
    /// last lines.
    pub fn start_again(&self) -> Result<()> {
        self.pg_ctl("start", &[])
    }

    /// `pg_ctl stop -m MODE` (`smart`, `fast` or `immediate`), waiting until it is down.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (field `local_server`) when `pg_ctl stop` fails (not running, say), with
    /// the server log's last lines.
    pub fn stop(&self, mode: &str) -> Result<()> {
        self.pg_ctl("stop", &["-m", mode])
    }

    /// `pg_ctl restart -m MODE` on the same port, waiting until it accepts connections.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (field `local_server`) when `pg_ctl restart` fails, with the server log's
    /// last lines.
    pub fn restart(&self, mode: &str) -> Result<()> {
        self.pg_ctl("restart", &["-m", mode])
    }

    /// Whether a server process holds the data directory.
    pub fn is_running(&self) -> bool {
        self.data().join("postmaster.pid").exists()
    }

    /// `pg_ctl status`: whether a live server process runs on the data directory (a stale
    /// `postmaster.pid` of a killed server counts as not running).
    fn pg_ctl_status(&self) -> Result<bool> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("status").arg("-D").arg(self.data());
        let out = cmd
            .output()
            .map_err(|e| fail(format!("cannot run {cmd:?}: {e}")))?;
        match out.status.code() {
            Some(0) => Ok(true),
            // 3: no server running; 4: no data directory.
            Some(3 | 4) => Ok(false),
            _ => Err(fail(format!(
                "{cmd:?} failed: {}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ))),
        }
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        match server_user() {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(u).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn pg_ctl(&self, action: &str, extra: &[&str]) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg(action)
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60"])
            .args(extra);
        if matches!(action, "start" | "restart") {
            // Durability is worth nothing to a test server; speed is. Dynamic shared memory in
            // the data directory: a server killed outright (tests do) leaves no segment behind
            // in /dev/shm.
            let mut options = format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
                 -c dynamic_shared_memory_type=mmap",
                self.port
            );
            // Last, so they win; quoted because pg_ctl hands the options to /bin/sh.
            for (name, value) in self.settings() {
                options.push_str(" -c ");
                options.push_str(&shell_quote(&format!("{name}={value}")));
            }
            cmd.arg("-l").arg(self.log()).arg("-o").arg(options);
        }
        run(&mut cmd).map_err(|e| fail(format!("{e}\n{}", self.log_tail())))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- {} ---\n{}",
            self.log().display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }
}

fn fail(message: String) -> Error {
    Error::config("local_server", message)
}

/// `s` in single quotes, for `/bin/sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn run(cmd: &mut Command) -> std::result::Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    ))
}

/// The user the server runs as when we are root: `postgres` if it exists, else `nobody`.
fn server_user() -> Option<&'static str> {
    static USER: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *USER.get_or_init(|| {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return None;
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let has = passwd
            .lines()
            .any(|l| l.split(':').next() == Some("postgres"));
        Some(if has { "postgres" } else { "nobody" })
    })
}

fn spare_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| fail(format!("no spare port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| fail(format!("no spare port: {e}")))?
        .port())
}

//! What the command-line tests share: a database of their own on the real server, the built
//! binary, and a look at what is really in the database.
#![allow(dead_code)]

pub mod scratch;

use std::path::Path;

use pgdbm_core::testing::TestDatabase;
use sqlx::{Connection, PgConnection};

/// A database created for one test and dropped with it.
pub struct TestDb {
    inner: TestDatabase,
    pub name: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let inner = TestDatabase::builder()
            .pool_size(0, 1)
            .build()
            .await
            .expect("test database");
        let name = inner.name().to_string();
        TestDb { inner, name }
    }

    pub fn url(&self) -> String {
        self.inner.url()
    }

    /// The URL as the CLI shows it (any password masked).
    pub fn masked_url(&self) -> String {
        pgdbm_core::DatabaseConfig::new(self.url()).to_string()
    }

    /// A direct connection, to check what is really in the database.
    pub async fn raw(&self) -> PgConnection {
        PgConnection::connect(&self.url())
            .await
            .expect("raw connection")
    }
}

/// `SELECT count(*) …` on `conn`.
pub async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(conn)
        .await
        .expect("count query")
}

/// Writes `dir/name`, creating its directory.
pub fn write(dir: &Path, name: &str, content: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    /// Standard error without the `database: …` line that names where the command acted.
    pub stderr: String,
    /// That line, after `database: ` (empty when the command named none).
    pub target: String,
}

/// The built `pgdbm` in `cwd`, with no database settings from the outside world (tests set
/// what they mean) and no colour.
pub fn pgdbm(cwd: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("pgdbm").expect("the pgdbm binary");
    c.current_dir(cwd);
    for var in [
        "DATABASE_URL",
        "DB_HOST",
        "DB_PORT",
        "DB_NAME",
        "DB_USER",
        "DB_PASSWORD",
        "DB_SCHEMA",
        "PGDBM_TEST_DATABASE_URL",
    ] {
        c.env_remove(var);
    }
    c.env("NO_COLOR", "1");
    c
}

/// Runs `cmd` with `args`.
pub fn run(cmd: &mut assert_cmd::Command, args: &[&str]) -> Run {
    let out = cmd.args(args).output().expect("run pgdbm");
    let all = String::from_utf8_lossy(&out.stderr).into_owned();
    let (target, stderr) = match all.strip_prefix("database: ") {
        Some(rest) => match rest.split_once('\n') {
            Some((line, others)) => (line.to_string(), others.to_string()),
            None => (rest.to_string(), String::new()),
        },
        None => (String::new(), all),
    };
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        target,
    }
}

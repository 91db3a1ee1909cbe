//! `pgdbm prepare [--check]`: the built binary driving the real `cargo sqlx prepare` against
//! scratch databases on real servers.
//!
//! The runs that compile share one lock: `cargo sqlx prepare --check` regenerates into
//! `<target>/sqlx-prepare-check`, which every workspace built into one target directory shares,
//! so two checks at once would mix their files.

mod support;
#[path = "../../tests/support/tools.rs"]
mod tools;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use support::scratch::{
    SQLX_DEPENDENCY, cargo_project, repository, scratch_databases_of, target_dir, test_server,
};
use support::{Run, write};

static ONE_PREPARE_AT_A_TIME: Mutex<()> = Mutex::new(());

const INSTALL: &str = "cargo install sqlx-cli --version 0.9.0 --no-default-features --features postgres,rustls --locked";

/// `pgdbm ARGS` in `cwd` with `env` and no other database settings; the run and its process id.
fn pgdbm(cwd: &Path, args: &[&str], env: &[(&str, OsString)]) -> (Run, u32) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgdbm"));
    c.current_dir(cwd).args(args).env("NO_COLOR", "1");
    for var in [
        "DATABASE_URL",
        "DB_HOST",
        "DB_PORT",
        "DB_NAME",
        "DB_USER",
        "DB_PASSWORD",
        "DB_SCHEMA",
        "PGDBM_TEST_DATABASE_URL",
        "PGDBM_TEST_SERVER_DIR",
    ] {
        c.env_remove(var);
    }
    // sqlx-cli 0.9.0 on PATH, installed under target/ when the machine has none; a test that
    // hides it passes PATH itself.
    c.env("PATH", tools::path_with_sqlx_cli());
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pgdbm");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        // prepare makes a scratch database of its own: it names no target.
        target: String::new(),
    };
    (run, pid)
}

/// The cargo running this test (a toolchain's cargo, not a rustup proxy).
fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO")))
}

#[test]
fn without_cargo_sqlx_it_says_how_to_install_it_and_creates_nothing() {
    let admin = test_server();
    let tmp = tempfile::tempdir().unwrap();
    // PATH: a directory with only `cargo`, then PATH without any directory holding cargo-sqlx.
    // Cargo also runs subcommands from $CARGO_HOME/bin, so CARGO_HOME is an empty directory.
    let bin = tmp.path().join("bin");
    let home = tmp.path().join("cargo-home");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::symlink(cargo(), bin.join("cargo")).unwrap();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(bin.clone())
            .chain(std::env::split_paths(&rest).filter(|d| !d.join("cargo-sqlx").exists())),
    )
    .unwrap();
    let env = [
        ("PATH", path.clone()),
        ("CARGO_HOME", home.clone().into_os_string()),
        ("DATABASE_URL", admin.clone().into()),
    ];
    // The setting really hides sqlx-cli and really keeps cargo.
    let probe = |args: &[&str]| {
        Command::new(bin.join("cargo"))
            .args(args)
            .env("PATH", &path)
            .env("CARGO_HOME", &home)
            .output()
            .unwrap()
    };
    assert!(probe(&["--version"]).status.success());
    let sqlx = probe(&["sqlx", "--version"]);
    assert!(
        !sqlx.status.success() && String::from_utf8_lossy(&sqlx.stderr).contains("no such command"),
        "cargo sqlx is still found: {sqlx:?}"
    );

    let (r, pid) = pgdbm(&repository(), &["prepare", "--check"], &env);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("`cargo sqlx` is not installed"), "{r:?}");
    assert!(r.stderr.contains(INSTALL), "{r:?}");
    assert_eq!(
        scratch_databases_of(&admin, pid, "prepare"),
        Vec::<String>::new()
    );
}

#[test]
fn check_passes_on_this_repository_with_the_throwaway_server() {
    let _one = ONE_PREPARE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // DATABASE_URL unset: the throwaway server, in a directory of this test's own.
    let dir = tempfile::tempdir().unwrap();
    let env = [("PGDBM_TEST_SERVER_DIR", dir.path().as_os_str().to_owned())];
    struct Stop<'a>(&'a [(&'a str, OsString)]);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let (r, _) = pgdbm(&repository(), &["test-server", "stop"], self.0);
            assert_eq!(r.code, Some(0), "{r:?}");
        }
    }
    let _stop = Stop(&env);

    let started = std::time::Instant::now();
    let (r, pid) = pgdbm(&repository(), &["prepare", "--check"], &env);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "using the throwaway server in {}",
            dir.path().display()
        )),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("running cargo sqlx prepare --check"),
        "{r:?}"
    );
    // sqlx really compiled the workspace's queries into its check directory.
    let checked = std::fs::read_dir(target_dir().join("sqlx-prepare-check"))
        .unwrap()
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.metadata().unwrap().modified().unwrap()
                    >= std::time::SystemTime::now() - started.elapsed()
            })
        })
        .count();
    assert!(checked > 0, "no query data regenerated: {r:?}");

    // The server keeps running for the next use; the scratch database is gone.
    let (url, _) = pgdbm(&repository(), &["test-server", "url"], &env);
    assert_eq!(url.code, Some(0), "{url:?}");
    assert_eq!(
        scratch_databases_of(url.stdout.trim(), pid, "prepare"),
        Vec::<String>::new()
    );
}

const USERS_QUERY: &str = "SELECT email FROM demo.users WHERE id = $1";

/// A workspace of one crate with one `sqlx::query!`, a module `demo` in pgdbm.toml, and this
/// repository's Cargo.lock and dev profile (the same dependency versions and settings, built into
/// the same target directory, so only the crate itself compiles after the first run).
fn small_workspace(dir: &Path, query: &str) {
    cargo_project(
        dir,
        "pgdbm-prepare-test",
        &format!("[dependencies]\n{SQLX_DEPENDENCY}\n"),
    );
    write(
        dir,
        "pgdbm.toml",
        "[project]\nname = \"demo\"\n\n[modules.demo]\nmigrations_path = \"migrations\"\nschema = \"demo\"\n",
    );
    write(
        dir,
        "migrations/001_users.sql",
        "CREATE TABLE {{tables.users}} (id bigint PRIMARY KEY, email text NOT NULL);\n",
    );
    set_query(dir, query);
}

fn set_query(dir: &Path, query: &str) {
    write(
        dir,
        "src/main.rs",
        &format!(
            r#"#[allow(dead_code)]
async fn email(conn: &mut sqlx::PgConnection) -> Result<String, sqlx::Error> {{
    let row = sqlx::query!("{query}", 1i64).fetch_one(conn).await?;
    Ok(row.email)
}}

fn main() {{}}
"#
        ),
    );
}

/// The `query` of every file in `dir/.sqlx`, sorted.
fn offline_queries(dir: &Path) -> Vec<String> {
    let mut queries: Vec<String> = std::fs::read_dir(dir.join(".sqlx"))
        .map(|d| {
            d.map(|e| {
                let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
                let json: serde_json::Value = serde_json::from_str(&text).unwrap();
                json["query"].as_str().unwrap().to_string()
            })
            .collect()
        })
        .unwrap_or_default();
    queries.sort();
    queries
}

#[test]
fn check_fails_after_a_query_changes_without_a_refresh() {
    let _one = ONE_PREPARE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let admin = test_server();
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path();
    small_workspace(dir, USERS_QUERY);
    // Not offline: `cargo metadata` (which sqlx-cli runs) reads every package of the lock file,
    // other platforms' too, and on a fresh machine only a download brings those that no build
    // here has needed ("Issue parsing `cargo metadata` output" otherwise). The lock file is
    // complete, so nothing is resolved anew.
    let env = [
        ("DATABASE_URL", OsString::from(&admin)),
        ("CARGO_TARGET_DIR", target_dir().into_os_string()),
    ];
    let mut pids = Vec::new();
    let mut prepare = |args: &[&str]| {
        let (r, pid) = pgdbm(dir, args, &env);
        pids.push(pid);
        r
    };

    // prepare writes .sqlx/ from the scratch database, migrated as pgdbm.toml says (the query
    // names demo.users, which only the migration in schema demo creates).
    let r = prepare(&["prepare"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(offline_queries(dir), vec![USERS_QUERY.to_string()]);
    let r = prepare(&["prepare", "--check"]);
    assert_eq!(r.code, Some(0), "{r:?}");

    // A changed query without a refresh: sqlx's check fails, its message passed through, and
    // .sqlx/ is left as it was.
    let changed = "SELECT id, email FROM demo.users WHERE id = $1";
    set_query(dir, changed);
    let r = prepare(&["prepare", "--check"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    // (sqlx-cli prints its error on stdout.)
    assert!(
        format!("{}{}", r.stdout, r.stderr)
            .contains("prepare check failed: .sqlx is missing one or more queries"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("`cargo sqlx prepare --check` failed"),
        "{r:?}"
    );
    assert_eq!(offline_queries(dir), vec![USERS_QUERY.to_string()]);

    // A refresh fixes it.
    let r = prepare(&["prepare"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(offline_queries(dir), vec![changed.to_string()]);
    let r = prepare(&["prepare", "--check"]);
    assert_eq!(r.code, Some(0), "{r:?}");

    for pid in pids {
        assert_eq!(
            scratch_databases_of(&admin, pid, "prepare"),
            Vec::<String>::new()
        );
    }
}

/// A service crate outside this workspace, as a user writes one: `pgdbm` as a dependency,
/// `tsql!` queries, and a `pgdbm.toml` whose top level is the service's own module (schema
/// `shop`), optionally beside a `[modules.billing]` section.
fn service_crate(dir: &Path, with_billing: bool) {
    let repo = repository();
    cargo_project(
        dir,
        "pgdbm-shop-test",
        &format!(
            "[dependencies]\npgdbm = {{ path = \"{0}\" }}\n{SQLX_DEPENDENCY}\n\n[build-dependencies]\npgdbm-core = {{ path = \"{0}/pgdbm-core\", default-features = false }}\n",
            repo.display()
        ),
    );
    write(
        dir,
        "build.rs",
        "fn main() {\n    pgdbm_core::build::rerun_if_migrations_change();\n}\n",
    );
    let mut config = "schema = \"shop\"\nmigrations = \"migrations\"\n".to_string();
    let mut queries = r#"
#[allow(dead_code)]
async fn customer_name(db: &pgdbm::Database) -> Result<String, sqlx::Error> {
    Ok(pgdbm::tsql!("SELECT name FROM {{tables.customers}} WHERE id = $1", 1i64)
        .fetch_one(db)
        .await?
        .name)
}
"#
    .to_string();
    write(
        dir,
        "migrations/001_customers.sql",
        "CREATE TABLE {{tables.customers}} (id bigint PRIMARY KEY, name text NOT NULL);\n",
    );
    if with_billing {
        config
            .push_str("\n[modules.billing]\nmigrations_path = \"billing\"\nschema = \"billing\"\n");
        write(
            dir,
            "billing/001_invoices.sql",
            "CREATE TABLE {{tables.invoices}} (id bigint PRIMARY KEY, cents bigint NOT NULL);\n",
        );
        queries.push_str(
            r#"
#[allow(dead_code)]
async fn total(db: &pgdbm::Database) -> Result<Option<i64>, sqlx::Error> {
    pgdbm::tsql_scalar!(module = "billing", "SELECT sum(cents)::int8 FROM {{tables.invoices}}")
        .fetch_one(db)
        .await
}
"#,
        );
    }
    write(dir, "pgdbm.toml", &config);
    write(dir, "src/main.rs", &format!("{queries}\nfn main() {{}}\n"));
}

/// `cargo check` of the crate in `dir` offline: no DATABASE_URL, `.sqlx/` only. A check runs
/// the macros exactly as a build does (they are where offline data is read and queries are
/// refused); a build would add code generation for every dependency, minutes of CI for nothing
/// this test looks at. The workspace's own offline `cargo build` is a step of `.ci/run`.
fn offline_check(dir: &Path) -> Run {
    let out = Command::new(cargo())
        .arg("check")
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("SQLX_OFFLINE", "true")
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        target: String::new(),
    }
}

#[test]
fn a_service_crate_whose_top_level_is_its_module_prepares_compiles_offline_and_checks() {
    let _one = ONE_PREPARE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let admin = test_server();
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path();
    let env = [
        ("DATABASE_URL", OsString::from(&admin)),
        ("CARGO_TARGET_DIR", target_dir().into_os_string()),
    ];
    let customers =
        r#"/* pgdbm: schema=shop at=17 */ SELECT name FROM "shop".customers WHERE id = $1"#;
    let invoices =
        r#"/* pgdbm: schema=billing at=29 */ SELECT sum(cents)::int8 FROM "billing".invoices"#;

    for (with_billing, migrated, queries) in [
        // pgdbm.toml holds nothing but the top level: it is the one module.
        (false, "migrated (shop)", vec![customers]),
        // The top level beside a section without a twin: both, the top level first.
        (true, "migrated (shop, billing)", vec![invoices, customers]),
    ] {
        service_crate(dir, with_billing);
        let (r, pid) = pgdbm(dir, &["prepare"], &env);
        assert_eq!(r.code, Some(0), "{r:?}");
        assert!(r.stderr.contains(migrated), "{r:?}");
        assert_eq!(offline_queries(dir), queries);
        assert_eq!(
            scratch_databases_of(&admin, pid, "prepare"),
            Vec::<String>::new()
        );

        let b = offline_check(dir);
        assert_eq!(b.code, Some(0), "the offline check failed: {b:?}");
        let (r, _) = pgdbm(dir, &["prepare", "--check"], &env);
        assert_eq!(r.code, Some(0), "{r:?}");
    }

    // A new migration file, nothing else touched: the one-line build.rs makes cargo compile the
    // queries again, and the one whose table the file drops is refused.
    write(
        dir,
        "migrations/002_drop_customers.sql",
        "DROP TABLE {{tables.customers}};\n",
    );
    let b = offline_check(dir);
    assert_eq!(b.code, Some(101), "{b:?}");
    assert!(b.stderr.contains("unknown table `customers`"), "{b:?}");
    std::fs::remove_file(dir.join("migrations/002_drop_customers.sql")).unwrap();
    let b = offline_check(dir);
    assert_eq!(b.code, Some(0), "{b:?}");
}

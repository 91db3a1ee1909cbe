//! `pgdbm migrate …`: the built binary against the real server, with the database state
//! checked afterwards.

mod support;
#[path = "../../tests/support/tools.rs"]
mod tools;

use support::{TestDb, count, pgdbm, run, write};

/// The binary as a plain `std::process::Command` (for children run at once).
fn pgdbm_std() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pgdbm"));
    c.env_remove("DATABASE_URL").env("NO_COLOR", "1");
    c
}

/// A project file in pgdbm (Python)'s shape: orders is declared first but depends on users.
const SHOP_TOML: &str = r#"[project]
name = "shop"
default_env = "dev"

[database]
migrations_table = "schema_migrations"

[environments.dev]
url = "${SHOP_DATABASE_URL}"

[modules.orders]
migrations_path = "orders/migrations"
schema = "orders"
mode = "standalone"
depends_on = ["users"]

[modules.users]
migrations_path = "users/migrations"
schema = "users"
"#;

#[tokio::test]
async fn eight_processes_racing_apply_each_file_exactly_once() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id int); SELECT pg_sleep(0.2);",
    );
    write(
        dir.path(),
        "002_b.sql",
        "CREATE TABLE {{tables.b}} (id int); INSERT INTO {{tables.b}} VALUES (1);",
    );
    write(
        dir.path(),
        "003_idx.sql",
        "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY a_id ON {{tables.a}} (id);\nCREATE INDEX CONCURRENTLY b_id ON {{tables.b}} (id);\n",
    );
    write(
        dir.path(),
        "004_c.sql",
        "CREATE TABLE {{tables.c}} (id int);",
    );
    let children: Vec<_> = (0..8)
        .map(|_| {
            pgdbm_std()
                .args([
                    "migrate", "apply", "--module", "race", "--schema", "race", "--dir",
                ])
                .arg(dir.path())
                .env("DATABASE_URL", t.url())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied_lines = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        applied_lines += stdout.lines().filter(|l| l.starts_with("applied ")).count();
    }
    assert_eq!(applied_lines, 4, "each file applied by exactly one process");
    let mut raw = t.raw().await;
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM race.schema_migrations").await,
        4
    );
    assert_eq!(count(&mut raw, "SELECT count(*) FROM race.b").await, 1);
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'race' AND tablename IN ('a', 'b')"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn the_command_line_creates_and_reports() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    let run = |args: &[&str]| {
        let out = pgdbm_std()
            .arg("migrate")
            .args(args)
            .arg("--dir")
            .arg(dir.path())
            .env("DATABASE_URL", t.url())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["create", "add posts"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("002_add_posts.sql"), "{out}");
    std::fs::write(
        dir.path().join("002_add_posts.sql"),
        "CREATE TABLE {{tables.posts}} (id int);",
    )
    .unwrap();
    let (code, out, _) = run(&["status", "--schema", "cli"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("001_a.sql") && out.contains("pending"),
        "{out}"
    );
    let (code, out, _) = run(&["apply", "--schema", "cli"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("applied")).count(),
        2,
        "{out}"
    );
    let (code, out, _) = run(&["apply", "--schema", "cli"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("up to date"), "{out}");
    std::fs::write(
        dir.path().join("001_a.sql"),
        "CREATE TABLE {{tables.a}} (id bigint);",
    )
    .unwrap();
    let (code, _, err) = run(&["verify", "--schema", "cli"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("001_a.sql") && err.contains("modified"),
        "{err}"
    );
    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, Some(2), "a usage error");
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
}

#[tokio::test]
async fn the_command_line_runs_every_module_of_pgdbm_toml_in_depends_on_order() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "pgdbm.toml", SHOP_TOML);
    write(
        dir.path(),
        "users/migrations/001_users.sql",
        "CREATE TABLE {{tables.users}} (id int PRIMARY KEY);",
    );
    // Fails unless users ran first.
    write(
        dir.path(),
        "orders/migrations/001_orders.sql",
        "CREATE TABLE {{tables.orders}} (id int, user_id int REFERENCES users.users (id));",
    );
    write(
        dir.path(),
        "orders/migrations/down/001_orders.down.sql",
        "DROP TABLE {{tables.orders}};",
    );
    let run = |args: &[&str]| {
        let out = pgdbm_std()
            .arg("migrate")
            .args(args)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env("SHOP_DATABASE_URL", t.url())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // pgdbm (Python) reads the same file and orders the modules the same way.
    let py = std::process::Command::new(tools::pgdbm_python())
        .arg("-c")
        .arg(
            "import sys; from pathlib import Path; from pgdbm.cli.config import load_config, resolve_module_order; \
             print(','.join(resolve_module_order(load_config(Path(sys.argv[1])))))",
        )
        .arg(dir.path().join("pgdbm.toml"))
        .output()
        .expect("python3 with pgdbm (Python) 0.5.0, which the tests install under target/test-tools/");
    assert!(
        py.status.success(),
        "pgdbm (Python) could not read the file (pip install 'pgdbm[cli]==0.5.0'): {}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "users,orders");

    let (code, out, err) = run(&["apply", "--all"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("=="))
            .collect::<Vec<_>>(),
        [
            "== module users (schema users) ==",
            "== module orders (schema orders) =="
        ]
    );
    let mut raw = t.raw().await;
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM orders.schema_migrations WHERE module_name = 'orders'"
        )
        .await,
        1
    );
    // One module by name; an unknown one is refused, naming the declared ones.
    let (code, out, _) = run(&["status", "--module", "users"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("001_users.sql") && out.contains("applied"),
        "{out}"
    );
    let (code, _, err) = run(&["status", "--module", "user"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("declares no module `user` (it declares: orders, users)"),
        "{err}"
    );

    // revert --all goes dependents first, and checks every module before any runs: users
    // has no down file, so nothing is reverted.
    let (code, _, err) = run(&["revert", "--all"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("down/001_users.down.sql"), "{err}");
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM orders.schema_migrations").await,
        1
    );
    let (code, out, err) = run(&["revert", "--module", "orders", "--steps", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("reverted 001_orders.sql with down/001_orders.down.sql"),
        "{out}"
    );
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'orders' AND tablename = 'orders'"
        )
        .await,
        0
    );

    // repair and baseline from the command line; --dry-run changes nothing.
    let (code, out, _) = run(&["baseline", "--module", "orders", "--dry-run"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("would record 001_orders.sql"), "{out}");
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM orders.schema_migrations").await,
        0
    );
    write(
        dir.path(),
        "users/migrations/001_users.sql",
        "-- people\nCREATE TABLE {{tables.users}} (id int PRIMARY KEY);",
    );
    let (code, _, err) = run(&["verify", "--module", "users"]);
    assert_eq!(code, Some(1), "{err}");
    let (code, out, _) = run(&["repair", "001_users.sql", "--module", "users", "--dry-run"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("would repair 001_users.sql: recorded "),
        "{out}"
    );
    let (code, _, _) = run(&["verify", "--module", "users"]);
    assert_eq!(code, Some(1));
    let (code, out, _) = run(&["repair", "001_users.sql", "--module", "users"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("repaired 001_users.sql"), "{out}");
    let (code, out, _) = run(&["verify", "--module", "users"]);
    assert_eq!((code, out.trim()), (Some(0), "checksums match"));

    // A dependency cycle is an error naming it, and nothing runs.
    write(
        dir.path(),
        "pgdbm.toml",
        &SHOP_TOML.replace(
            "schema = \"users\"\n",
            "schema = \"users\"\ndepends_on = [\"orders\"]\n",
        ),
    );
    let (code, _, err) = run(&["apply", "--all"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cycle: orders → users → orders")
            || err.contains("cycle: users → orders → users"),
        "{err}"
    );
}

#[tokio::test]
async fn the_command_line_reads_the_file_pgdbm_python_writes() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let out = tools::pgdbm_python_cli()
        .args(["generate", "config", "--name", "shop"])
        .current_dir(dir.path())
        .output()
        .expect("pgdbm (Python)'s CLI: python3 with pgdbm[cli]==0.5.0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(dir.path().join("pgdbm.toml")).unwrap();
    let mut text = String::new();
    let mut in_modules = false;
    for line in written.lines() {
        if line.starts_with("# [modules.") {
            in_modules = true;
        } else if line.is_empty() {
            in_modules = false;
        }
        // Uncomment the example modules, as a user of the generated file would.
        if in_modules && let Some(l) = line.strip_prefix("# ") {
            text.push_str(l.split("  #").next().unwrap());
        } else {
            text.push_str(line);
        }
        text.push('\n');
    }
    // Its `test` environment, pointed at this test's database (wherever the test server runs).
    let url = url::Url::parse(&t.url()).unwrap();
    let text = text.replacen(
        "host = \"localhost\"\nport = 5432\ndatabase = \"shop_test\"",
        &format!(
            "host = \"{}\"\nport = {}\ndatabase = \"{}\"",
            url.host_str().unwrap(),
            url.port().unwrap_or(5432),
            t.name
        ),
        1,
    );
    assert!(
        text.contains("[modules.billing]")
            && text.contains("depends_on = [\"users\"]")
            && text.contains(&t.name),
        "{text}"
    );
    write(dir.path(), "pgdbm.toml", &text);
    write(
        dir.path(),
        "src/users/migrations/001_users.sql",
        "CREATE TABLE {{tables.users}} (id int PRIMARY KEY);",
    );
    write(
        dir.path(),
        "src/billing/migrations/001_invoices.sql",
        "CREATE TABLE {{tables.invoices}} (id int, user_id int REFERENCES users.users (id));",
    );
    let out = pgdbm_std()
        .args(["migrate", "apply", "--env", "test"])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No --module and no top-level module: every module, users first, as Python's CLI does.
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("=="))
            .collect::<Vec<_>>(),
        [
            "== module users (schema users) ==",
            "== module billing (schema billing) =="
        ]
    );
    let mut raw = t.raw().await;
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM billing.schema_migrations WHERE module_name = 'billing'"
        )
        .await,
        1
    );
}

#[test]
fn help_version_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&mut pgdbm(dir.path()), &["--help"]);
    assert_eq!(r.code, Some(0));
    for part in [
        "Usage: pgdbm [OPTIONS] <COMMAND>",
        "migrate",
        "test-server",
        "prepare",
        "completions",
        "Exit codes:",
        "3  `migrate status --check`",
    ] {
        assert!(
            r.stdout.contains(part),
            "{part:?} missing from\n{}",
            r.stdout
        );
    }
    let r = run(&mut pgdbm(dir.path()), &["migrate", "revert", "--help"]);
    assert_eq!(r.code, Some(0));
    assert!(
        r.stdout.contains("--steps <N>") && r.stdout.contains("--dry-run"),
        "{}",
        r.stdout
    );
    let r = run(&mut pgdbm(dir.path()), &["migrate", "--help"]);
    assert!(r.stdout.contains("Examples:"), "{}", r.stdout);
    let r = run(&mut pgdbm(dir.path()), &["--version"]);
    assert_eq!(
        (r.code, r.stdout.trim()),
        (Some(0), concat!("pgdbm ", env!("CARGO_PKG_VERSION")))
    );
    for (shell, marker) in [
        ("bash", "_pgdbm()"),
        ("zsh", "#compdef pgdbm"),
        ("fish", "complete -c pgdbm"),
    ] {
        let r = run(&mut pgdbm(dir.path()), &["completions", shell]);
        assert_eq!(r.code, Some(0));
        assert!(
            r.stdout.contains(marker),
            "{shell}: {}",
            &r.stdout[..200.min(r.stdout.len())]
        );
    }
    // Usage errors exit 2 with clap's message.
    let r = run(&mut pgdbm(dir.path()), &["migrate", "apply", "--bogus"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("unexpected argument '--bogus'"),
        "{}",
        r.stderr
    );
    let r = run(&mut pgdbm(dir.path()), &["completions", "powershell7"]);
    assert_eq!(r.code, Some(2));
}

#[tokio::test]
async fn status_check_json_and_colour() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m/001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    write(
        dir.path(),
        "m/002_b.sql",
        "CREATE TABLE {{tables.b}} (id int);",
    );
    let cmd = || {
        let mut c = pgdbm(dir.path());
        c.env("DATABASE_URL", t.url());
        c
    };
    let base = ["--dir", "m", "--schema", "js", "--module", "js"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut v: Vec<&str> = extra.to_vec();
        v.extend(base);
        v
    };
    // Pending files: --check exits 3 so CI can gate on it; without --check, 0.
    let r = run(&mut cmd(), &with(&["migrate", "status", "--check"]));
    assert_eq!(r.code, Some(3), "{r:?}");
    let r = run(&mut cmd(), &with(&["migrate", "status"]));
    assert_eq!(r.code, Some(0));
    let r = run(&mut cmd(), &with(&["--json", "migrate", "pending"]));
    let mut v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    // Each document names where it acted: the URL (password masked), database, schema, source.
    let target = v[0].as_object_mut().unwrap().remove("target").unwrap();
    assert_eq!(target["source"], "DATABASE_URL", "{target}");
    assert_eq!(target["schema"], "js");
    assert_eq!(target["url"].as_str().unwrap(), t.masked_url(), "{target}");
    assert_eq!(target["database"].as_str().unwrap(), t.name, "{target}");
    assert_eq!(
        v,
        serde_json::json!([{"module": "js", "schema": "js", "pending": ["001_a.sql", "002_b.sql"]}])
    );
    let r = run(&mut cmd(), &with(&["migrate", "apply"]));
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>().len(),
        2,
        "one line per applied file: {}",
        r.stdout
    );
    let r = run(&mut cmd(), &with(&["migrate", "status", "--check"]));
    assert_eq!(r.code, Some(0), "{r:?}");
    // NO_COLOR (set by pgdbm()) means no escape codes; --color always forces them.
    assert!(!r.stdout.contains('\u{1b}'), "{:?}", r.stdout);
    let r = run(
        &mut cmd(),
        &with(&["--color", "always", "migrate", "status"]),
    );
    assert!(r.stdout.contains("\u{1b}[32m"), "{:?}", r.stdout);

    let r = run(&mut cmd(), &with(&["--json", "migrate", "status"]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["files"][0]["file"], "001_a.sql");
    assert_eq!(v[0]["files"][0]["state"], "applied");
    let r = run(&mut cmd(), &with(&["--json", "migrate", "history"]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["history"].as_array().unwrap().len(), 2);
    assert_eq!(v[0]["history"][0]["file"], "002_b.sql");
    let r = run(&mut cmd(), &with(&["--json", "migrate", "verify"]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["verified"], true);

    // Drift: status --check exits 3, verify exits 1 naming the file; nothing is applied.
    write(
        dir.path(),
        "m/001_a.sql",
        "CREATE TABLE {{tables.a}} (id bigint);",
    );
    write(
        dir.path(),
        "m/003_c.sql",
        "CREATE TABLE {{tables.c}} (id int);",
    );
    let r = run(&mut cmd(), &with(&["migrate", "status", "--check"]));
    assert_eq!(r.code, Some(3));
    assert!(r.stdout.contains("MODIFIED (recorded "), "{}", r.stdout);
    let r = run(&mut cmd(), &with(&["migrate", "verify"]));
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.starts_with("error: ") && r.stderr.contains("001_a.sql"),
        "{}",
        r.stderr
    );
    let r = run(&mut cmd(), &with(&["migrate", "apply"]));
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("modified after it was applied"),
        "{}",
        r.stderr
    );
    let mut raw = t.raw().await;
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM js.schema_migrations").await,
        2
    );
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'js' AND tablename = 'c'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn bad_input_is_one_short_message_and_changes_nothing() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m/001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    let cmd = || {
        let mut c = pgdbm(dir.path());
        c.env("DATABASE_URL", t.url());
        c
    };
    // A directory that is not there.
    let r = run(
        &mut cmd(),
        &["migrate", "apply", "--dir", "nope", "--schema", "bad"],
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("cannot read the migrations directory `nope`"),
        "{}",
        r.stderr
    );
    // A schema that is not an identifier.
    let r = run(
        &mut cmd(),
        &["migrate", "apply", "--dir", "m", "--schema", "my-service"],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("my-service"), "{}", r.stderr);
    // A migration name that cannot make a file name.
    let r = run(
        &mut cmd(),
        &["migrate", "create", "add/posts", "--dir", "m"],
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("invalid migration name `add/posts`"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_dir(dir.path().join("m")).unwrap().count(), 1);
    // An unreachable server: one line, no password, quickly.
    let r = run(
        pgdbm(dir.path()).env(
            "DATABASE_URL",
            "postgresql://postgres:s3cret@127.0.0.1:1/nowhere",
        ),
        &["migrate", "status", "--dir", "m"],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    assert!(!r.stderr.contains("s3cret"), "{}", r.stderr);
    // Nothing was created on the real server by any of it.
    let mut raw = t.raw().await;
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('bad', 'my-service')"
        )
        .await,
        0
    );
}

/// Every command that connects names where it acts on stderr; commands that write refuse to
/// guess when nothing names the database; read-only ones use the local default and say so.
#[tokio::test]
async fn the_cli_says_where_it_acts_and_writes_only_where_told() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "migrations/001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    let project = format!("pgdbm_cli_nowhere_{}", std::process::id());
    write(
        dir.path(),
        "pgdbm.toml",
        &format!(
            "[project]\nname = \"{project}\"\n\n[modules.app]\nmigrations_path = \"migrations\"\nschema = \"app\"\n"
        ),
    );

    // Named by DATABASE_URL: said on stderr, password masked.
    let r = run(
        pgdbm(dir.path()).env("DATABASE_URL", t.url()),
        &["migrate", "status"],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.target,
        format!("{} (DATABASE_URL)", t.masked_url()),
        "{r:?}"
    );

    // Nothing named: every command that writes refuses, and nothing is written anywhere.
    for args in [
        &["migrate", "apply"][..],
        &["migrate", "revert"],
        &["migrate", "baseline"],
        &["migrate", "repair", "001_a.sql"],
        &["migrate", "mark-unapplied", "001_a.sql"],
        &["db", "drop", "--yes"],
        &["db", "reset", "--yes"],
        &["tenants", "create", "acme"],
        &["tenants", "drop", "acme"],
    ] {
        let r = run(&mut pgdbm(dir.path()), args);
        assert_eq!(r.code, Some(1), "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("changes a database, and none was named")
                && r.stderr.contains("DATABASE_URL")
                && r.stderr.contains("--env"),
            "{args:?}: {r:?}"
        );
        assert_eq!(r.target, "", "refused before connecting: {r:?}");
    }

    // A read-only command uses the local default (the project's name, as the examples do)
    // and says so; this one does not exist, and the error says how to make it.
    let r = run(&mut pgdbm(dir.path()), &["migrate", "status"]);
    assert!(
        r.target
            .contains(&format!("/{project} (nothing set: the local default")),
        "{r:?}"
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "the local default database `{project}` does not exist yet"
        )),
        "{r:?}"
    );

    // --env names an environment of pgdbm.toml; its name is the source.
    write(
        dir.path(),
        "pgdbm.toml",
        &format!(
            "[project]\nname = \"{project}\"\n\n[environments.staging]\nurl = \"{}\"\n\n[modules.app]\nmigrations_path = \"migrations\"\nschema = \"app\"\n",
            t.url()
        ),
    );
    let r = run(
        &mut pgdbm(dir.path()),
        &["--env", "staging", "migrate", "apply"],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.target,
        format!("{} (--env staging)", t.masked_url()),
        "{r:?}"
    );
}

//! `pgdbm db create | drop | reset`: the built binary against the real server, each test on a
//! database name of its own (`pgdbm_cli_db_<pid>_<n>`), with pg_database checked afterwards.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::{Connection, PgConnection};
use support::{TestDb, count, pgdbm, run, write};

/// A password the server (trust auth) ignores and no output may show.
const PASSWORD: &str = "s3cret_pw";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A database name of this test's own, dropped (if it was made) when the test ends, also when
/// it fails.
struct Named {
    name: String,
    /// The server's URL with no path and the password.
    server: url::Url,
    /// The maintenance database, to look at pg_database and clean up.
    admin: String,
}

impl Named {
    fn new(t: &TestDb) -> Named {
        let name = format!(
            "pgdbm_cli_db_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut server = url::Url::parse(&t.url()).unwrap();
        server.set_path("");
        let admin = with_path(&server, "/postgres");
        server.set_password(Some(PASSWORD)).unwrap();
        Named {
            name,
            server,
            admin,
        }
    }

    /// The URL of this database, with the password.
    fn url(&self) -> String {
        self.url_of(&self.name)
    }

    /// The URL of database `db` on the same server, with the password.
    fn url_of(&self, db: &str) -> String {
        with_path(&self.server, &format!("/{db}"))
    }

    /// The server's URL with no database at all.
    fn bare_url(&self) -> String {
        self.server.to_string()
    }

    async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.admin).await.unwrap()
    }

    async fn exists(&self) -> bool {
        let mut c = self.admin().await;
        count(
            &mut c,
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{}'",
                self.name
            ),
        )
        .await
            == 1
    }

    /// A connection to the database itself.
    async fn raw(&self) -> PgConnection {
        PgConnection::connect(&with_path(&self.server, &format!("/{}", self.name)))
            .await
            .unwrap()
    }

    /// `pgdbm` with DATABASE_URL naming this database.
    fn cmd(&self, cwd: &std::path::Path) -> assert_cmd::Command {
        let mut c = pgdbm(cwd);
        c.env("DATABASE_URL", self.url());
        c
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime: clean up on a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn with_path(server: &url::Url, path: &str) -> String {
    let mut u = server.clone();
    u.set_path(path);
    u.to_string()
}

fn no_password(r: &support::Run) {
    assert!(
        !r.stdout.contains(PASSWORD) && !r.stderr.contains(PASSWORD),
        "the password shows: {r:?}"
    );
}

#[tokio::test]
async fn create_is_idempotent_and_drop_needs_yes() {
    let t = TestDb::new().await;
    let n = Named::new(&t);
    let dir = tempfile::tempdir().unwrap();
    let name = &n.name;

    let r = run(&mut n.cmd(dir.path()), &["db", "create"]);
    no_password(&r);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout, format!("created database `{name}`\n"));
    assert_eq!(r.stderr, "");
    assert!(n.exists().await);

    // An existing database is fine.
    let r = run(&mut n.cmd(dir.path()), &["db", "create"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.stdout,
        format!("database `{name}` already exists; nothing to do\n")
    );
    assert!(n.exists().await);

    // Without --yes: refused, nothing changed (its data is still there).
    sqlx::raw_sql("CREATE TABLE keep (id int); INSERT INTO keep VALUES (1)")
        .execute(&mut n.raw().await)
        .await
        .unwrap();
    let r = run(&mut n.cmd(dir.path()), &["db", "drop"]);
    no_password(&r);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        format!(
            "error: `pgdbm db drop` deletes database `{name}` and all its data; add --yes to drop it\n"
        )
    );
    assert!(n.exists().await);
    assert_eq!(
        count(&mut n.raw().await, "SELECT count(*) FROM keep").await,
        1
    );

    let r = run(&mut n.cmd(dir.path()), &["db", "drop", "--yes"]);
    no_password(&r);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout, format!("dropped database `{name}`\n"));
    assert!(!n.exists().await);

    // A database that is not there: nothing to do.
    let r = run(&mut n.cmd(dir.path()), &["db", "drop", "--yes"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.stdout,
        format!("database `{name}` does not exist; nothing to do\n")
    );
    assert!(!n.exists().await);

    // DB_HOST / DB_NAME / DB_USER / DB_PASSWORD instead of a URL.
    let server = url::Url::parse(&n.bare_url()).unwrap();
    let parts = |args: &[&str]| {
        let mut c = pgdbm(dir.path());
        c.env("DB_HOST", server.host_str().unwrap())
            .env("DB_PORT", server.port().unwrap_or(5432).to_string())
            .env("DB_USER", server.username())
            .env("DB_PASSWORD", PASSWORD)
            .env("DB_NAME", name);
        run(&mut c, args)
    };
    let r = parts(&["db", "create"]);
    no_password(&r);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), format!("created database `{name}`\n").as_str()),
        "{r:?}"
    );
    assert!(n.exists().await);
    let r = parts(&["db", "drop", "--yes"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), format!("dropped database `{name}`\n").as_str()),
        "{r:?}"
    );
    assert!(!n.exists().await);
}

#[tokio::test]
async fn drop_refuses_while_sessions_are_connected_unless_forced() {
    let t = TestDb::new().await;
    let n = Named::new(&t);
    let dir = tempfile::tempdir().unwrap();
    let name = &n.name;
    let r = run(&mut n.cmd(dir.path()), &["db", "create"]);
    assert_eq!(r.code, Some(0), "{r:?}");

    let mut first = n.raw().await;
    let second = n.raw().await;
    let r = run(&mut n.cmd(dir.path()), &["db", "drop", "--yes"]);
    no_password(&r);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        format!(
            "error: database `{name}` has 2 other sessions connected; nothing was dropped. Close them, or add --force to end them and drop it\n"
        )
    );
    assert!(n.exists().await);
    assert_eq!(count(&mut first, "SELECT 1::bigint").await, 1);
    second.close().await.unwrap();

    // reset refuses the same way, and changes nothing.
    let r = run(
        &mut n.cmd(dir.path()),
        &["db", "reset", "--yes", "--dir", "."],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "error: database `{name}` has 1 other session connected; nothing was dropped. Close them, or add --force to end them and drop it\n"
        )
    );
    assert!(n.exists().await);
    assert_eq!(count(&mut first, "SELECT 1::bigint").await, 1);

    let r = run(&mut n.cmd(dir.path()), &["db", "drop", "--yes", "--force"]);
    no_password(&r);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.stdout,
        format!("dropped database `{name}` (ended 1 other session)\n")
    );
    assert!(!n.exists().await);
    assert!(
        sqlx::query("SELECT 1").execute(&mut first).await.is_err(),
        "the session was ended"
    );
}

#[tokio::test]
async fn refusals_change_nothing() {
    let t = TestDb::new().await;
    let n = Named::new(&t);
    let dir = tempfile::tempdir().unwrap();
    let with_url = |url: &str, args: &[&str]| {
        let mut c = pgdbm(dir.path());
        c.env("DATABASE_URL", url);
        let r = run(&mut c, args);
        no_password(&r);
        r
    };

    // A URL that names no database: refused whatever the flags (the server would take the
    // user name, here `postgres`).
    for url in [
        n.bare_url(),
        format!("{}/", n.bare_url().trim_end_matches('/')),
    ] {
        let shown = url.replace(PASSWORD, "****");
        for (verb, args) in [
            ("drop", &["db", "drop"][..]),
            ("drop", &["db", "drop", "--yes"][..]),
            ("drop", &["db", "drop", "--yes", "--force"][..]),
            (
                "reset",
                &["db", "reset", "--yes", "--force", "--dir", "."][..],
            ),
            ("create", &["db", "create"][..]),
        ] {
            let r = with_url(&url, args);
            assert_eq!(r.code, Some(1), "{args:?}: {r:?}");
            assert_eq!(r.stdout, "");
            assert_eq!(
                r.stderr,
                format!(
                    "error: the connection URL `{shown}` names no database (PostgreSQL would take the user name), and `pgdbm db {verb}` acts only on a database named explicitly: put it in the URL's path, e.g. postgresql://user@host:5432/mydb\n"
                ),
                "{args:?}"
            );
        }
    }

    // The server's own databases: never dropped or reset.
    for db in ["postgres", "template0", "template1"] {
        for verb in ["drop", "reset"] {
            let mut args = vec!["db", verb, "--yes", "--force"];
            if verb == "reset" {
                args.extend(["--dir", "."]);
            }
            let r = with_url(&n.url_of(db), &args);
            assert_eq!(r.code, Some(1), "{r:?}");
            assert_eq!(
                r.stderr,
                format!(
                    "error: refusing to {verb} database `{db}`: postgres, template0 and template1 belong to the server; point DATABASE_URL at a database of your own\n"
                )
            );
        }
    }
    // Creating one that exists is still fine.
    let r = with_url(&n.url_of("template1"), &["db", "create"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (
            Some(0),
            "database `template1` already exists; nothing to do\n"
        )
    );

    // Not an identifier.
    let r = with_url(&n.url_of("my-db"), &["db", "create"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        "error: invalid database name `my-db`: it may only contain ASCII letters, digits and underscores; names must match ^[A-Za-z_][A-Za-z0-9_]{0,62}$ (a letter or underscore, then up to 62 letters, digits or underscores)\n"
    );

    // reset without --yes, on a database that does not exist: refused, nothing created.
    let r = with_url(&n.url(), &["db", "reset", "--dir", "."]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "error: `pgdbm db reset` deletes database `{}` and all its data, then creates and migrates it; add --yes to reset it\n",
            n.name
        )
    );
    assert!(!n.exists().await);

    // An unreachable server: one error, no password.
    let r = with_url(
        &format!("postgresql://postgres:{PASSWORD}@127.0.0.1:1/{}", n.name),
        &["db", "create"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.starts_with(
            "error: could not connect to PostgreSQL at 127.0.0.1:1 (database `postgres`"
        ),
        "{}",
        r.stderr
    );

    // Nothing was created or dropped (other tests make databases meanwhile: look at these).
    assert!(!n.exists().await);
    let mut admin = n.admin().await;
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM pg_database WHERE datname IN ('postgres', 'template0', 'template1')"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM pg_database WHERE datname = 'my-db'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn reset_drops_creates_and_migrates() {
    let t = TestDb::new().await;
    let n = Named::new(&t);
    let dir = tempfile::tempdir().unwrap();
    let name = &n.name;
    write(
        dir.path(),
        "m/001_a.sql",
        "CREATE TABLE {{tables.a}} (id int); INSERT INTO {{tables.a}} VALUES (1);",
    );
    write(
        dir.path(),
        "m/002_b.sql",
        "CREATE TABLE {{tables.b}} (id int);",
    );
    let args = ["db", "reset", "--yes", "--dir", "m", "--schema", "app"];

    // A database that is not there yet: created and migrated.
    let r = run(&mut n.cmd(dir.path()), &args);
    no_password(&r);
    assert_eq!(r.code, Some(0), "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert_eq!(
        lines[0],
        format!("database `{name}` does not exist; nothing to drop")
    );
    assert_eq!(lines[1], format!("created database `{name}`"));
    assert!(lines[2].starts_with("applied 001_a.sql ("), "{}", r.stdout);
    assert!(lines[3].starts_with("applied 002_b.sql ("), "{}", r.stdout);
    assert!(n.exists().await);

    // Something of its own, then reset: gone, and the migrations applied again.
    sqlx::raw_sql("CREATE TABLE junk (id int); INSERT INTO app.a VALUES (2)")
        .execute(&mut n.raw().await)
        .await
        .unwrap();
    let r = run(&mut n.cmd(dir.path()), &args);
    assert_eq!(r.code, Some(0), "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], format!("dropped database `{name}`"));
    assert_eq!(lines[1], format!("created database `{name}`"));
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    let mut raw = n.raw().await;
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'junk'"
        )
        .await,
        0
    );
    assert_eq!(count(&mut raw, "SELECT count(*) FROM app.a").await, 1);
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM app.schema_migrations").await,
        2
    );
    drop(raw);

    // Migrations that cannot be read: refused before anything is dropped.
    sqlx::raw_sql("INSERT INTO app.a VALUES (3)")
        .execute(&mut n.raw().await)
        .await
        .unwrap();
    let r = run(
        &mut n.cmd(dir.path()),
        &["db", "reset", "--yes", "--dir", "nope"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr
            .starts_with("error: cannot read the migrations directory `nope`"),
        "{}",
        r.stderr
    );
    assert_eq!(
        count(&mut n.raw().await, "SELECT count(*) FROM app.a").await,
        2
    );

    // A migration that fails after the database was recreated says so.
    write(
        dir.path(),
        "m/003_bad.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    let r = run(&mut n.cmd(dir.path()), &args);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.contains("applied 002_b.sql"), "{}", r.stdout);
    assert!(
        r.stderr.contains("003_bad.sql")
            && r.stderr.contains(&format!(
                "(database `{name}` was dropped and created again, and its migrations stopped here; fix this and run `pgdbm migrate apply`)"
            )),
        "{}",
        r.stderr
    );
    let mut raw = n.raw().await;
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM app.schema_migrations").await,
        2
    );
    assert_eq!(count(&mut raw, "SELECT count(*) FROM app.a").await, 1);
}

#[tokio::test]
async fn reset_migrates_every_module_of_pgdbm_toml_through_an_environment() {
    let t = TestDb::new().await;
    let n = Named::new(&t);
    let dir = tempfile::tempdir().unwrap();
    let name = &n.name;
    write(
        dir.path(),
        "pgdbm.toml",
        r#"[project]
name = "shop"
default_env = "dev"

[environments.dev]
url = "${SHOP_URL}"

[modules.orders]
migrations_path = "orders"
schema = "orders"
depends_on = ["users"]

[modules.users]
migrations_path = "users"
schema = "users"
"#,
    );
    write(
        dir.path(),
        "users/001_users.sql",
        "CREATE TABLE {{tables.users}} (id int PRIMARY KEY);",
    );
    write(
        dir.path(),
        "orders/001_orders.sql",
        "CREATE TABLE {{tables.orders}} (id int, user_id int REFERENCES users.users (id));",
    );
    let mut c = pgdbm(dir.path());
    c.env("SHOP_URL", n.url());
    let r = run(&mut c, &["--env", "dev", "db", "reset", "--yes"]);
    no_password(&r);
    assert_eq!(r.code, Some(0), "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", r.stdout);
    assert_eq!(
        lines[0],
        format!("database `{name}` does not exist; nothing to drop")
    );
    assert_eq!(lines[1], format!("created database `{name}`"));
    assert_eq!(lines[2], "== module users (schema users) ==");
    assert!(
        lines[3].starts_with("applied 001_users.sql ("),
        "{}",
        r.stdout
    );
    assert_eq!(lines[4], "== module orders (schema orders) ==");
    assert!(
        lines[5].starts_with("applied 001_orders.sql ("),
        "{}",
        r.stdout
    );
    let mut raw = n.raw().await;
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM pg_tables WHERE (schemaname, tablename) IN (('users', 'users'), ('orders', 'orders'))"
        )
        .await,
        2
    );
    drop(raw);

    // The default environment, no --env; drop goes through it too.
    let mut c = pgdbm(dir.path());
    c.env("SHOP_URL", n.url());
    let r = run(&mut c, &["db", "drop", "--yes"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), format!("dropped database `{name}`\n").as_str()),
        "{r:?}"
    );
    assert!(!n.exists().await);
}
